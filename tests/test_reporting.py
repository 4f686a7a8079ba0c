"""The report's one table: every variant with what it cost to make and to run."""

import json

from tunelab.records import BaseRecord, BenchRecord, QuantizeRecord, TrainRecord
from tunelab.reporting.markdown import pipe_table
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
                        "| — | 400 | 18.9 | 47.5 | 523.4 |")  # not compared with the best here
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
    assert variants_table(rows).splitlines()[0].endswith("| scoring | exact_match [95% CI] | vs best: Δ [interval] "
                                                          "| train s | tokens/s | latency p50 ms | size MB |")
    detail = markdown_table(rows, table_metrics(files)).splitlines()
    assert detail[0] == "| variant | prompting | scoring | exact_match [95% CI] | f1 | unparseable | examples | examples/s |"
    assert detail[3] == "| trained | zero_shot | generate | 0.500 [0.110, 0.470] | 0.401 [0.300, 0.500] | 5.0% | 20 | 3.0 |"
    summary = pipeline_summary(metrics_by_key(rows), ("zero_shot", "generate"))
    assert summary == {"base.zero_shot.generate.exact_match": 0.25, "trained.zero_shot.generate.exact_match": 0.5,
                       "exact_match": 0.5, "train_seconds": 400.0}


def test_each_row_carries_its_paired_comparison_with_the_best_into_the_tables_and_metrics():
    from tunelab.reporting.significance import Comparison
    from tunelab.reporting.tables import comparisons_table, with_comparisons

    rows = with_costs([row("base", accuracy=0.6), row("trained", accuracy=0.9)], BASE, TRAIN, None, BENCH)
    compared = {"base/zero_shot/choice": Comparison("trained/zero_shot/choice", 100, -0.3, -0.41234, -0.18766, 0.05, 0.02,
                                                    "McNemar exact (conditional)")}
    marked = with_comparisons(rows, compared)
    assert [(r["vs_best"], r.get("diff_vs_best_ci_low")) for r in marked] == [("worse", -0.4123), ("best", None)]
    table = variants_table(marked).splitlines()
    assert "| 0.600 [0.550, 0.650] | worse (-0.300 [-0.412, -0.188]) |" in table[2]
    assert "| 0.900 [0.850, 0.950] | best |" in table[3]
    comparisons = comparisons_table(marked, compared)
    assert comparisons.splitlines()[-1] == (
        "| base/zero_shot/choice | 100 | -0.300 | [-0.412, -0.188] | McNemar exact (conditional) | worse |")
    assert "one-sided bound at 5.00% (1 rows compared, Bonferroni)" in comparisons and "above −0.02" in comparisons
    assert "hold together at 95% (eval.recommend.level)" in comparisons  # the level, not a fixed 95%
    assert metrics_by_key(marked)["base/zero_shot/choice"].items() >= {"vs_best": "worse", "diff_vs_best": -0.3,
                                                                    "diff_vs_best_ci_high": -0.1877}.items()


def costed(variant: str, score: float, latency, size, train, vs_best: str) -> dict:
    return {**row(variant, accuracy=score), "token_latency_p50_ms": latency, "size_mb": size, "train_seconds": train,
            "vs_best": vs_best}


def test_the_frontier_keeps_rows_no_other_beats_on_score_and_every_cost():
    from tunelab.reporting.tables import pareto_frontier

    rows = [costed("trained", 0.9, 50, 523, 400, "best"), costed("merged", 0.9, 45, 516, 401, "non-inferior"),
            costed("int8_dynamic", 0.86, 30, 289, 402, "worse"), costed("nf4", 0.85, 35, 169, 403, "worse"),
            costed("slow", 0.84, 60, 600, 500, "worse"), costed("base", 0.8, None, 516, 0, "worse")]
    # trained loses to merged (as good, cheaper); slow loses to all; base has no latency to place it by
    assert pareto_frontier(rows) == {"merged/zero_shot/choice", "int8_dynamic/zero_shot/choice", "nf4/zero_shot/choice"}


def test_the_recommendation_is_the_cheapest_row_non_inferior_to_the_best_within_the_margin():
    from tunelab.reporting.tables import recommendation

    def judged(variant, score, latency, size, train, vs_best, low=-0.015):
        return {**costed(variant, score, latency, size, train, vs_best), "diff_vs_best": score - 0.9,
                "diff_vs_best_ci_low": low, "diff_vs_best_ci_high": 0.01}

    rows = [costed("trained", 0.9, 50, 523, 400, "best"), judged("merged", 0.89, 45, 516, 401, "non-inferior"),
            judged("int8_dynamic", 0.86, 30, 289, 402, "inconclusive", -0.07), judged("base", 0.8, None, 516, 0, "worse")]
    assert recommendation(rows, 0.02) == (
        "**Recommendation: `merged/zero_shot/choice`**: accuracy 0.890 [0.840, 0.940], non-inferior to the best "
        "(`trained/zero_shot/choice`, 0.900 [0.850, 0.950]) within a margin of 0.02: Δ -0.010, lower bound -0.015 > "
        "−0.02; 45 ms per token, 516 MB, 401 s to make.\n"
        "Cheaper, not recommended: `base/zero_shot/choice` worse (-0.100 [-0.015, +0.010]); "
        "`int8_dynamic/zero_shot/choice` inconclusive (-0.040 [-0.070, +0.010]).\n")
    rows[-1]["vs_best"] = "non-inferior"  # prompting is as good: nothing to train
    assert recommendation(rows, 0.02).startswith("**Recommendation: `base/zero_shot/choice`**: accuracy 0.800")
    assert recommendation(rows, 0.02).endswith("516 MB, no training.\n")
    assert recommendation([costed("trained", 0.9, 50, 523, 400, "best")], 0.02).startswith(
        "**Recommendation: `trained/zero_shot/choice`**: accuracy 0.900 [0.850, 0.950], the best; 50 ms per token")
    # a method scored on the first 20 test rows only (chain-of-thought's limit) is not a verdict on the whole split,
    # as the Alpaca demo's report once recommended: a method scored on every row that the best was scored on wins
    few = {**judged("base", 0.85, None, 516, 0, "non-inferior"), "prompting": "chain_of_thought", "examples": 20}
    assert recommendation([costed("trained", 0.9, 50, 523, 400, "best"), few, rows[1]], 0.02).startswith(
        "**Recommendation: `merged/zero_shot/choice`**")
    assert recommendation([costed("trained", 0.9, 50, 523, 400, "best"), few], 0.02).startswith(
        "**Recommendation: `trained/zero_shot/choice`**")


def test_a_gguf_measured_on_llama_cpp_gets_its_own_cost_row_and_an_unmeasured_one_says_how():
    from tunelab.reporting.tables import native_skipped_lines

    costs = {"size_mb": 141.5, "load_seconds": 20.1, "ttft_ms": 80.0, "token_latency_ms": {"p50": 45.0, "p95": 50.0},
             "tokens_per_second": {"1": 20.0, "4": 60.0}, "peak_rss_mb": 1900}
    native = {"load_seconds": 0.3, "ttft_ms": 12.5, "token_latency_ms": {"p50": 9.1, "p95": 9.9},
              "tokens_per_second": {"1": 105.2}}
    measured = {"gguf_q8_0": {**costs, "llama_cpp": native},
                "gguf_f16": {**costs, "llama_cpp": {"skipped": "llama-cpp-python is not installed: pip install"}}}
    table = deployment_table(measured, [row("trained", accuracy=0.9), row("gguf_q8_0", accuracy=0.85)],
                             ("zero_shot", "choice")).splitlines()
    assert table[2] == "| gguf_q8_0 | 141.5 | 20.1 | 80.0 | 45.0 / 50.0 | 20.0 | 60.0 | 1900 | 0.850 [0.800, 0.900] | -0.050 |"
    assert table[3] == "| gguf_q8_0 on llama.cpp | 141.5 | 0.3 | 12.5 | 9.1 / 9.9 | 105.2 |  |  |  |  |"
    assert table[4].startswith("| gguf_f16 |") and len(table) == 5
    assert native_skipped_lines(measured) == [
        "- gguf_f16 on llama.cpp: not measured: llama-cpp-python is not installed: pip install"]


def test_agreement_counts_the_rows_predicted_alike_and_how_far_the_choice_logprobs_moved(tmp_path):
    from tunelab.reporting.agreement import agreement, agreement_table, by_id

    def predictions(name: str, rows: list[tuple]) -> object:
        path = tmp_path / f"{name}.jsonl"
        path.write_text("".join(json.dumps({"id": i, "choice": {"prediction": p, "logprobs": {"a": la, "b": lb}},
                                            "generate": {"prediction": g}}) + "\n" for i, p, la, lb, g in rows))
        return path

    reference = predictions("merged", [(1, "a", -0.1, -2.0, "a"), (2, "b", -3.0, -0.2, "b"),
                                       (3, "a", -0.5, -1.0, "a"), (9, "a", -0.1, -2.0, "a")])
    variant = predictions("gguf", [(1, "a", -0.1, -2.5, "a"), (2, "a", -0.6, -0.9, "b"), (3, "a", -0.5, -1.0, "b")])
    result = agreement(by_id(reference), by_id(variant))
    # rows 1-3 are shared; |Δ|: row 1 (0, 0.5), row 2 (2.4, 0.7), row 3 (0, 0)
    assert result["rows"] == 3
    assert result["choice"]["same_prediction"] == 2 / 3 and result["generate"]["same_prediction"] == 2 / 3
    assert abs(result["choice"]["mean_abs_logprob_delta"] - 3.6 / 6) < 1e-9
    assert abs(result["choice"]["max_abs_logprob_delta"] - 2.4) < 1e-9
    assert agreement_table({"gguf": result}, "merged").splitlines()[2] == "| gguf | 3 | 66.7% | 0.6000 / 2.4000 | 66.7% |"


def test_agreement_reads_a_generative_tasks_answers(tmp_path):
    """A generative task's rows name what was read as ``answer`` (no choices, no ``prediction``)."""
    from tunelab.reporting.agreement import agreement, by_id

    for name, answers in (("merged", ["4", "7", None]), ("gguf", ["4", "8", None])):
        (tmp_path / f"{name}.jsonl").write_text("".join(
            json.dumps({"id": i, "generate": {"texts": [f"... {a}"], "answer": a, "score": 1.0}}) + "\n"
            for i, a in enumerate(answers)))
    assert agreement(by_id(tmp_path / "merged.jsonl"), by_id(tmp_path / "gguf.jsonl")) == {
        "rows": 3, "generate": {"same_prediction": 2 / 3}}


def test_tables_keep_each_cell_as_formatted_and_each_row_on_its_own_line():
    """tabulate, unaligned: a wider cell in one row leaves the other rows' lines unchanged, numbers keep
    their formatting (0.50, +0.010, 007) and a missing figure is an empty cell."""
    table = pipe_table(["row", "score", "Δ"], [["base", "0.50", "+0.010"], ["a much longer row name", None, "007"]])
    assert table.splitlines()[0] == "| row | score | Δ |"
    assert table.splitlines()[2:] == ["| base | 0.50 | +0.010 |", "| a much longer row name |  | 007 |"]
    assert set(table.splitlines()[1]) == {"|", "-"} and table.endswith("\n")
    assert pipe_table(["row"], []) == "| row |\n|-------|\n"
