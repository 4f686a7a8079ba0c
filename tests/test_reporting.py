"""The report's one table: every variant with what it cost to make and to run."""

import json

from tunelab.records import BaseRecord, BenchRecord, QuantizeRecord, TrainRecord
from tunelab.reporting.tables import (
    deployment_table,
    eval_rows,
    markdown_table,
    metrics_by_key,
    pipeline_summary,
    table_metrics,
    tradeoff_rows,
    variants_table,
    with_costs,
    with_score,
)


def row(variant: str, prompting: str = "zero_shot", accuracy: float = 0.8) -> dict:
    return with_score({"variant": variant, "prompting": prompting, "template": "sentiment_instruction", "scoring": "choice",
                       "metric": "accuracy", "accuracy": accuracy, "accuracy_ci_low": accuracy - 0.05,
                       "accuracy_ci_high": accuracy + 0.05, "macro_f1": accuracy, "unparseable_share": None,
                       "examples": 100, "examples_per_second": 10.0})


BASE = BaseRecord(model="smollm2", parameters=134_515_008, saved_megabytes=516.5)
TRAIN = TrainRecord(strategy="ia3", train_seconds=400.0, steps=100)
QUANTIZE = QuantizeRecord.from_json({"strategy": "ia3", "variants": {
    "merged": {"status": "made", "seconds": 1.5, "size_mb": 516.5},
    "nf4": {"status": "made", "seconds": 2.5, "size_mb": 168.6}}})
BENCH = BenchRecord(environment={}, settings={}, variants={
    "trained": {"size_mb": 523.4, "tokens_per_second": {"1": 18.9, "4": 41.6}, "token_latency_ms": {"p50": 47.5}},
    "nf4": {"size_mb": 168.6, "tokens_per_second": {"1": 34.3}, "token_latency_ms": {"p50": 27.7}}})


def test_each_variant_carries_its_adaptation_quantization_train_time_speed_and_size():
    rows = with_costs([row("base", "few_shot"), row("trained"), row("merged"), row("nf4")], BASE, TRAIN, QUANTIZE, BENCH)
    costs = [(r["adaptation"], r["quantization"], r["train_seconds"], r["tokens_per_second"],
              r["token_latency_p50_ms"], r["size_mb"]) for r in rows]
    assert costs == [
        ("none (prompting)", "none", 0.0, None, None, 516.5),  # prompting trains nothing; not benchmarked
        ("ia3", "none", 400.0, 18.9, 47.5, 523.4),
        ("ia3", "merged", 401.5, None, None, 516.5),  # made, not benchmarked: its size from quantize
        ("ia3", "nf4", 402.5, 34.3, 27.7, 168.6),  # training + quantization
    ]
    table = variants_table(rows).splitlines()
    assert table[0].startswith("| variant | adaptation | prompting (template) | quantization | scoring | accuracy [95% CI]")
    assert table[3] == ("| trained | ia3 | zero_shot (sentiment_instruction) | none | choice | 0.800 [0.750, 0.850] "
                        "| 400 | 18.9 | 47.5 | 523.4 |")
    assert table[4].endswith("| 402 | — | — | 516.5 |")


def test_without_a_trained_model_nothing_has_a_train_time_but_prompting():
    [base, trained] = with_costs([row("base"), row("trained")], BASE, None, None, None)
    assert (base["train_seconds"], trained["train_seconds"], trained["adaptation"]) == (0.0, None, "?")


def test_the_pipeline_run_shows_every_accuracy_and_the_trained_models_as_the_headline():
    by_key = metrics_by_key(with_costs([row("base", accuracy=0.6), row("trained", accuracy=0.9)], BASE, TRAIN, None, BENCH))
    assert by_key["trained/zero_shot/choice"]["train_seconds"] == 400.0
    assert "adaptation" not in by_key["trained/zero_shot/choice"]  # labels are keys, not metrics
    assert pipeline_summary(by_key, ("zero_shot", "choice")) == {
        "base.zero_shot.choice.accuracy": 0.6, "trained.zero_shot.choice.accuracy": 0.9, "accuracy": 0.9, "train_seconds": 400.0}
    assert not {"score", "score_ci_low"} & set(by_key["base/zero_shot/choice"])  # the headline once, by its own name


def test_the_headline_is_the_configured_result_and_the_tradeoffs_carry_it():
    rows = with_costs([row("trained", "zero_shot", 0.9), row("trained", "few_shot", 0.7), row("nf4", "few_shot", 0.6)],
                      BASE, TRAIN, QUANTIZE, BENCH)
    by_key = metrics_by_key(rows)
    assert pipeline_summary(by_key, ("few_shot", "choice"))["accuracy"] == 0.7
    assert tradeoff_rows(rows, ("few_shot", "choice")) == [
        {"variant": "trained", "metric": "accuracy", "score": 0.7, "token_latency_p50_ms": 47.5,
         "tokens_per_second_batch1": 18.9, "size_mb": 523.4},
        {"variant": "nf4", "metric": "accuracy", "score": 0.6, "token_latency_p50_ms": 27.7,
         "tokens_per_second_batch1": 34.3, "size_mb": 168.6}]
    measured = {"nf4": {**BENCH.variants["nf4"], "size_mb": 168.6, "load_seconds": 1, "ttft_ms": 2,
                        "token_latency_ms": {"p50": 27.7, "p95": 30}}}
    assert "| nf4 | 168.6 | 1 | 2 | 27.7 / 30 | 34.3 |  | 0.600 [0.550, 0.650] | -0.100 |" in deployment_table(
        measured, rows, ("few_shot", "choice"))


def test_a_generative_tasks_tables_compare_its_own_headline_with_its_interval(tmp_path):
    """An extractive-QA metrics file as the evaluate stage writes it: exact match is the headline."""
    report = {"examples": 20, "exact_match": 0.25, "exact_match_ci95": [0.11, 0.47], "f1": 0.4012345,
              "f1_ci95": [0.3, 0.5], "unparseable_share": 0.05, "examples_per_second": 3.0}
    for variant, exact in (("base", 0.25), ("trained", 0.5)):
        (tmp_path / f"{variant}.json").write_text(json.dumps({
            "variant": variant, "task": "extractive_qa", "metrics": ["exact_match", "f1"],
            "prompting": {"zero_shot": {"template": "squad", "scoring": {"generate": {**report, "exact_match": exact}}}}}))
    files = [tmp_path / "base.json", tmp_path / "trained.json"]
    rows = with_costs(eval_rows(files), BASE, TRAIN, None, BENCH)
    assert (rows[1]["metric"], rows[1]["score"], rows[1]["score_ci_low"], rows[1]["f1"]) == ("exact_match", 0.5, 0.11, 0.4012)
    assert "accuracy" not in rows[1]
    assert variants_table(rows).splitlines()[0].endswith("| scoring | exact_match [95% CI] | train s | tokens/s "
                                                          "| latency p50 ms | size MB |")
    detail = markdown_table(rows, table_metrics(files)).splitlines()
    assert detail[0] == "| variant | prompting | scoring | exact_match [95% CI] | f1 | unparseable | examples | examples/s |"
    assert detail[3] == "| trained | zero_shot | generate | 0.500 [0.110, 0.470] | 0.401 [0.300, 0.500] | 5.0% | 20 | 3.0 |"
    summary = pipeline_summary(metrics_by_key(rows), ("zero_shot", "generate"))
    assert summary == {"base.zero_shot.generate.exact_match": 0.25, "trained.zero_shot.generate.exact_match": 0.5,
                       "exact_match": 0.5, "train_seconds": 400.0}
