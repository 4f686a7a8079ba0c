"""The glue that was only tested end to end: sweep summary, training telemetry, stage records, the CLI."""

import json
import shutil
import time
from types import SimpleNamespace

import pytest
from conftest import REPO_ROOT

from tunelab import cli
from tunelab.errors import TunelabError
from tunelab.records import QuantizeRecord, TrainRecord, read_optional, read_record
from tunelab.sweeps.queue import StageCounts
from tunelab.sweeps.summary import SweepRun, experiments, markdown, stages_line, table_rows
from tunelab.training.callbacks import TrainingTelemetry

FIGURES = {"metric": "accuracy", "accuracy": 0.75, "accuracy_ci_low": 0.5, "accuracy_ci_high": 0.9, "train_seconds": 12.0,
           "tokens_per_second": 30.5, "token_latency_p50_ms": None, "size_mb": 1.5}
EVAL = {"eval": {"prompting": {"zero_shot": {"method": "zero_shot", "scoring": ["choice", "generate"],
                                             "max_new_tokens": 4}},
                 "fine_tuned_prompting": ["zero_shot"], "batch_size": 4, "length_normalize": False, "limit": None,
                 "seed": 0, "headline": "zero_shot/generate"}}


def sweep_run(name: str, overrides: list[str], metrics: dict, stages: StageCounts | None = None) -> SweepRun:
    return SweepRun(name, overrides, "Success", EVAL, metrics, {}, stages)


# --- sweep summary ---------------------------------------------------------------------------


def test_experiments_are_read_from_dvc_exp_show_by_name():
    show = [{"rev": "workspace", "experiments": None},
            {"rev": "abc", "experiments": [
                {"revs": [{"name": "s-1", "data": {"params": {"params.yaml": {"data": {"train": {"seed": 1}}}},
                                                   "metrics": {"metrics/eval.json": {"data": {"k": {"accuracy": 1}}},
                                                               "metrics/train.json": {"data": {"val_loss_after": 0.5}}},
                                                   "outs": {"models/trained": {"hash": "h1"}, "metrics/x": {}}}}]},
                {"revs": [{"name": "other", "data": {}}]}]}]
    assert experiments(show, {"s-1", "missing"}) == {
        "s-1": {"params": {"train": {"seed": 1}}, "metrics": {"k": {"accuracy": 1}}, "train": {"val_loss_after": 0.5},
                "outputs": {"models/trained": "h1"}}}


def test_the_sweep_tables_hold_the_baselines_once_and_each_runs_headline_result():
    runs = [sweep_run("s-1", ["train.seed=1"], {"base/zero_shot/choice": FIGURES, "trained/zero_shot/choice": FIGURES,
                                                "trained/zero_shot/generate": {**FIGURES, "accuracy": 0.5}}),
            sweep_run("s-2", ["train.seed=2"], {"base/zero_shot/choice": {**FIGURES, "accuracy": 0.1},
                                                "trained/zero_shot/generate": {**FIGURES, "accuracy": 0.25}})]
    baselines, adapted = table_rows(runs)
    assert [(r["run"], r["accuracy"]) for r in baselines] == [("s-1", 0.75)]  # from the first run that has them
    assert [(r["run"], r["variant"], r["scoring"], r["accuracy"]) for r in adapted] == [
        ("s-1", "trained", "generate", 0.5), ("s-2", "trained", "generate", 0.25)]  # eval.headline: zero_shot/generate
    table = markdown(adapted, with_run=True).splitlines()
    assert table[0].startswith("| run | overrides | variant | accuracy [95% CI] |")
    assert table[2] == "| s-1 | train.seed=1 | trained | 0.500 [0.500, 0.900] | 12 | 30.5 | — | 1.5 |"


def test_the_sweep_recommends_across_its_runs_by_the_reports_rule():
    from tunelab.sweeps.summary import recommendation_section

    ids = [f"r{i}" for i in range(400)]
    right = {"base": 300, "s-1": 360, "s-2": 359}  # s-2 one row short of s-1 on 400 rows: within 0.02
    runs = [sweep_run(name, [f"train.seed={i}"], {"base/zero_shot/generate": {**FIGURES, "train_seconds": 0.0},
                                                   "trained/zero_shot/generate": {**FIGURES, "token_latency_p50_ms": latency,
                                                                                  "examples": 400}})
            for i, (name, latency) in enumerate((("s-1", 20.0), ("s-2", 10.0)), start=1)]

    def scores(row: dict) -> dict[str, float]:
        correct = right["base" if row["variant"] == "base" else row["run"]]
        return {i: float(n < correct) for n, i in enumerate(ids)}

    baselines, adapted = table_rows(runs)
    for row in baselines:
        row["examples"] = 400
    text, pick = recommendation_section(baselines + adapted, runs, scores)
    assert (pick["run"], pick["variant"]) == ("s-2", "trained")  # faster, and shown non-inferior to s-1
    assert "**`trained · train.seed=2`**" in text and "within a margin of 0.02" in text
    assert "| base/zero_shot | 0.750 [0.500, 0.900] | worse (-0.150 [" in text  # prompting, shared by both runs
    assert recommendation_section(baselines + adapted, runs, lambda row: (_ for _ in ()).throw(FileNotFoundError("x")))[
        0].startswith("\n## Recommendation\n\nNone: a run's predictions could not be read (x)")
    runs[1].outputs["data/prepared/test.jsonl"] = "other"
    assert "different test splits" in recommendation_section(baselines + adapted, runs, scores)[0]


def test_baselines_that_differ_per_run_name_their_prompting_method():
    """Runs on other data each have their own baselines; each row then says which method it is."""
    runs = [sweep_run(name, [f"data={name}"], {"base/zero_shot/generate": FIGURES,
                                              "base/few_shot/generate": {**FIGURES, "accuracy": 0.5}})
            for name in ("squad", "gsm8k")]
    for run, lock in zip(runs, ("h1", "h2")):
        run.outputs["data/predictions/base"] = lock
    baselines, _ = table_rows(runs)
    table = markdown(baselines, with_run=True).splitlines()
    assert table[2].startswith("| squad | data=squad | base · zero_shot/generate | 0.750 [0.500, 0.900] |")
    assert table[5].startswith("| gsm8k | data=gsm8k | base · few_shot/generate | 0.500 [0.500, 0.900] |")


def test_a_generative_sweep_compares_its_tasks_headline():
    rouge = {"metric": "rougeL", "rougeL": 0.31, "rougeL_ci_low": 0.25, "rougeL_ci_high": 0.37, "train_seconds": 9.0}
    baselines, adapted = table_rows([sweep_run("g-1", ["train.seed=1"], {"base/zero_shot/generate": {**rouge, "rougeL": 0.1},
                                                                         "trained/zero_shot/generate": rouge})])
    assert [(r["variant"], r["score"]) for r in baselines + adapted] == [("base", 0.1), ("trained", 0.31)]
    table = markdown(adapted, with_run=True).splitlines()
    assert table[0].startswith("| run | overrides | variant | rougeL [95% CI] |")
    assert table[2].startswith("| g-1 | train.seed=1 | trained | 0.310 [0.250, 0.370] | 9 |")


def test_the_stage_line_sums_what_dvc_did_across_runs():
    runs = [sweep_run("a", [], {}, StageCounts(3, 10, 1)), sweep_run("b", [], {}, StageCounts(0, 14, 0)),
            sweep_run("c", [], {}, None)]
    assert stages_line(runs) == ("Stage executions: 3 of 28 ran; caching saved 25 (24 unchanged since the baseline, "
                                 "1 restored from DVC's run cache).\n")
    assert stages_line([sweep_run("c", [], {})]) == ""


# --- training telemetry ----------------------------------------------------------------------


class Recorder:
    def __init__(self):
        self.logged = []

    def log_metrics(self, metrics: dict, step: int | None = None) -> None:
        self.logged.append((step, metrics))


def test_telemetry_measures_tokens_per_second_and_mfu_over_each_log_window():
    run = Recorder()
    telemetry = TrainingTelemetry(run, flops_per_token=6e6, peak_flops=1e12)
    state = SimpleNamespace(is_world_process_zero=True, num_input_tokens_seen=0, global_step=0)
    telemetry.on_train_begin(None, state, None)
    started = time.perf_counter()
    time.sleep(0.05)
    state.num_input_tokens_seen, state.global_step = 4000, 5
    telemetry.on_log(None, state, None, logs={"loss": 1.25, "learning_rate": 1e-4, "epoch": 0.1})
    elapsed = time.perf_counter() - started
    [(step, metrics)] = run.logged
    assert step == 5 and metrics["loss"] == 1.25 and metrics["learning_rate"] == 1e-4 and "epoch" not in metrics
    assert 4000 / elapsed <= metrics["tokens_per_second"] <= 4000 / 0.05  # the window: after begin, up to the log
    assert metrics["mfu"] == pytest.approx(metrics["tokens_per_second"] * 6e6 / 1e12)
    assert metrics["peak_memory_mb"] > 0
    telemetry.on_log(None, state, None, logs={"eval_loss": 0.9})  # an evaluation: no throughput window
    assert set(run.logged[1][1]) == {"eval_loss", "peak_memory_mb"}
    summary = telemetry.summary([{"loss": 2.0, "step": 1}, {"loss": 1.25, "step": 5}, {"eval_loss": 0.9, "step": 5}])
    assert summary["train_loss_final"] == 1.25  # the last logged train loss, not the eval loss after it
    assert summary["tokens_per_second"] == round(metrics["tokens_per_second"], 1)


def test_an_mfu_above_one_is_never_recorded_and_the_peak_is_the_best_sample():
    """A peak measured while another process held a core is too low: the achieved FLOP/s beat it.
    The peak is measured again when training ends (the best sample counts); an MFU still above 1
    is not recorded, and the summary says the peak was contended."""
    state = SimpleNamespace(is_world_process_zero=True, num_input_tokens_seen=0, global_step=0)

    def trained(telemetry: TrainingTelemetry) -> dict:
        telemetry.on_train_begin(None, state, None)
        time.sleep(0.05)
        state.num_input_tokens_seen, state.global_step = state.num_input_tokens_seen + 1000, state.global_step + 1
        telemetry.on_log(None, state, None, logs={"loss": 1.0})
        telemetry.on_train_end(None, state, None)
        return telemetry.summary([{"loss": 1.0, "step": 1}])

    contended = TrainingTelemetry(Recorder(), flops_per_token=1e9, peak_flops=1e6, measure_peak=lambda: 2e6)
    summary = trained(contended)
    assert "mfu" not in contended.run.logged[0][1] and summary["mfu"] is None and summary["matmul_peak_contended"]
    remeasured = TrainingTelemetry(Recorder(), flops_per_token=1e9, peak_flops=1e6, measure_peak=lambda: 1e15)
    summary = trained(remeasured)
    assert summary["matmul_peak_gflops"] == 1e6 and 0 < summary["mfu"] <= 1 and not summary["matmul_peak_contended"]


def test_telemetry_logs_only_on_the_main_process():
    run = Recorder()
    telemetry = TrainingTelemetry(run, 1.0, 1.0)
    telemetry.on_log(None, SimpleNamespace(is_world_process_zero=False, num_input_tokens_seen=1, global_step=1), None,
                     logs={"loss": 1.0})
    assert run.logged == []


# --- the records stages pass each other ------------------------------------------------------


def test_records_name_the_stage_that_writes_them(tmp_path):
    with pytest.raises(TunelabError, match=r"quantize.json: not found; run the quantize stage first"):
        read_record(QuantizeRecord, tmp_path / "quantize.json", "quantize")
    assert read_optional(TrainRecord, tmp_path / "train.json", "train") is None
    (tmp_path / "train.json").write_text('{"strategy": "lora"}')
    with pytest.raises(TunelabError, match=r"train.json: not a train stage record .*rerun the train stage"):
        read_record(TrainRecord, tmp_path / "train.json", "train")
    (tmp_path / "train.json").write_text(json.dumps({"strategy": "lora", "train_seconds": 3.5, "steps": 20, "mfu": 0.1}))
    assert read_record(TrainRecord, tmp_path / "train.json", "train") == TrainRecord("lora", 3.5, 20)


def test_the_quantize_record_says_what_was_made_and_why_the_rest_was_skipped(tmp_path):
    written = {"strategy": "lora", "source": "trained", "variants": {"merged": {"status": "made", "seconds": 1.0, "size_mb": 2.0},
                                                "qat": {"status": "skipped", "reason": "applies to strategy=qat"}}}
    (tmp_path / "quantize.json").write_text(json.dumps(written))
    record = read_record(QuantizeRecord, tmp_path / "quantize.json", "quantize")
    assert record.made() == ["merged"]
    assert (record.skipped_reason("qat"), record.skipped_reason("merged"), record.skipped_reason("nf4")) == (
        "applies to strategy=qat", None, None)
    assert record.to_json() == written  # what the benchmark, evaluate and report stages read back
    del written["source"]  # a record from before alignment: its variants were the trained model's
    (tmp_path / "quantize.json").write_text(json.dumps(written))
    assert read_record(QuantizeRecord, tmp_path / "quantize.json", "quantize").source == "trained"


# --- the CLI ---------------------------------------------------------------------------------


@pytest.fixture
def conf_dir(tmp_path, monkeypatch):
    """The CLI runs in a repository root: here, one holding a copy of conf/."""
    shutil.copytree(REPO_ROOT / "conf", tmp_path / "conf")
    monkeypatch.chdir(tmp_path)
    return tmp_path


@pytest.mark.parametrize(("argv", "message"), [
    (["train.max_steps=5,10"], "error: train.max_steps=5,10 sweeps 2 runs: add -m (multirun) to run them all"),
    (["-m", "train.max_steps=5", "--name", "no spaces"], "error: --name 'no spaces': use letters, digits, - and _"),
    (["--report", "nosuch"], "error: sweep nosuch: no sweeps/nosuch/sweep.json here and no experiment of it in "
                             "`dvc exp show`; pull them first: dvc exp pull origin nosuch-1 nosuch-2 ..."),
    (["-m", "train.lr=1e-4"], "error: sweep run train.lr=0.0001: conf/: Could not override 'train.lr'"),
])
def test_the_cli_refuses_bad_input_in_one_line_before_queueing_anything(conf_dir, capsys, argv, message):
    with pytest.raises(SystemExit) as exited:
        cli.main(argv)
    assert exited.value.code == 2
    assert capsys.readouterr().err.startswith(message)
    assert not (conf_dir / "sweeps").exists()


def test_the_cli_refuses_a_sweep_without_workers(capsys):
    with pytest.raises(SystemExit) as exited:
        cli.parse_args(["-m", "train.seed=1,2", "--jobs", "0"])
    assert exited.value.code == 2 and "--jobs must be at least 1" in capsys.readouterr().err


def test_a_sweep_over_tasks_lists_each_runs_baselines_and_names_each_runs_metric():
    exact = {"metric": "exact_match", "exact_match": 0.2, "exact_match_ci_low": 0.1, "exact_match_ci_high": 0.3}
    math = {"metric": "accuracy", "accuracy": 0.05, "accuracy_ci_low": 0.01, "accuracy_ci_high": 0.1}
    runs = [SweepRun("t-1", ["data=squad_v1"], "Success", EVAL, {"base/zero_shot/generate": exact,
                                                                "trained/zero_shot/generate": exact},
                     {"data/predictions/base": "h1"}, None),
            SweepRun("t-2", ["data=gsm8k"], "Success", EVAL, {"base/zero_shot/generate": math,
                                                             "trained/zero_shot/generate": math},
                     {"data/predictions/base": "h2"}, None)]
    baselines, adapted = table_rows(runs)
    assert [(r["run"], r["metric"], r["label"]) for r in baselines] == [
        ("t-1", "exact_match", "base/zero_shot · data=squad_v1"), ("t-2", "accuracy", "base/zero_shot · data=gsm8k")]
    table = markdown(adapted, with_run=True).splitlines()
    assert table[0].startswith("| run | overrides | variant | score [95% CI] |")
    assert table[2].startswith("| t-1 | data=squad_v1 | trained | exact_match 0.200 [0.100, 0.300] |")
    shared = [SweepRun(r.name, r.overrides, r.status, r.params, r.metrics, {"data/predictions/base": "h1"}, None)
              for r in runs]
    assert [r["run"] for r in table_rows(shared)[0]] == ["t-1"]  # the same base predictions: listed once


def test_runs_that_differ_only_in_their_seed_are_aggregated_per_variant():
    from tunelab.sweeps.summary import across_seeds, seed_metrics, seeds_section

    def run_of(name, overrides, accuracy):
        return sweep_run(name, overrides, {"trained/zero_shot/generate": {**FIGURES, "accuracy": accuracy,
                                                                           "accuracy_ci_low": accuracy - 0.1,
                                                                           "accuracy_ci_high": accuracy + 0.1}})
    runs = [run_of("s-1", ["strategy=lora", "train.seed=0"], 0.80), run_of("s-2", ["strategy=lora", "train.seed=1"], 0.84),
            run_of("s-3", ["strategy=lora", "train.seed=2"], 0.88), run_of("s-4", ["strategy=ia3", "train.seed=0"], 0.7)]
    [lora] = across_seeds(table_rows(runs)[1])  # ia3 has one seed: nothing to aggregate
    assert (lora["overrides"], lora["variant"], lora["seeds"]) == ("strategy=lora", "trained", 3)
    assert lora["mean"] == pytest.approx(0.84) and lora["sd"] == pytest.approx(0.04)
    half = 4.302652729911275 * 0.04 / 3 ** 0.5  # t(0.975, 2) · sd / √n
    assert (lora["ci_low"], lora["ci_high"]) == (pytest.approx(0.84 - half), pytest.approx(0.84 + half))
    assert lora["test_half_width"] == pytest.approx(0.1)
    assert "| strategy=lora | trained | 3 | 0.840 ± 0.040 | [0.741, 0.939] | ±0.100 |" in seeds_section([lora])
    assert seed_metrics([lora]) == {"seeds.strategy_lora.trained.accuracy.mean": pytest.approx(0.84),
                                    "seeds.strategy_lora.trained.accuracy.sd": pytest.approx(0.04),
                                    "seeds.strategy_lora.trained.accuracy.seeds": 3}
    assert across_seeds(table_rows(runs[3:])[1]) == []
