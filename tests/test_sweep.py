"""Sweeps: Hydra multirun syntax → checked runs → queued DVC experiments → one MLflow parent."""

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import REPO_ROOT, made_once
from pipeline_project import HEADLINE, STAGES, copy_project, load_run, run, save_run

from tunelab.errors import TunelabError
from tunelab.sweeps.overrides import check_runs, expand
from tunelab.sweeps.queue import stage_counts, visible_gpus

CONF = REPO_ROOT / "conf"
CHROMIUM, CHROMEDRIVER = "/usr/bin/chromium", "/usr/bin/chromedriver"  # Debian's chromium, chromium-driver
SWEEP = "grid"
SYNTAX = ["strategy=lora,ia3,prompt_tuning", "train.learning_rate=1e-4,3e-4"]  # expanded and checked, not run
# Run for real: grid-1 trains IA3; grid-2 is the baseline's own configuration (lora, 3e-4), which no stage reruns
GRID = ["strategy=ia3,lora", "train.learning_rate=3e-4"]
RUNS = 2


def test_hydra_sweep_syntax_expands_to_every_combination_in_order():
    assert expand(SYNTAX) == [[f"strategy={s}", f"train.learning_rate={lr}"]
                            for s in ("lora", "ia3", "prompt_tuning") for lr in ("0.0001", "0.0003")]  # Hydra's spelling
    assert expand(["train.seed=range(0,3)", "prompt=choice(sentiment_role,sentiment_cot)", "eval.limit=5"]) == [
        [f"train.seed={seed}", f"prompt={prompt}", "eval.limit=5"]
        for seed in (0, 1, 2) for prompt in ("sentiment_role", "sentiment_cot")]
    assert expand(["train.max_steps=10"]) == [["train.max_steps=10"]]


@pytest.mark.parametrize(("overrides", "message"), [
    (["train.lr=1e-4,3e-4"], "sweep run train.lr=0.0001: conf/: Could not override 'train.lr'"),
    (["train.learning_rate=fast,1e-4"], "sweep run train.learning_rate=fast: config key train.learning_rate: "
                                        "Value 'fast' of type 'str' could not be converted to Float"),
    (["strategy=lora,lorax"], "sweep run strategy=lorax: conf/: In 'config': Could not find 'strategy/lorax'"),
    (["train.batch_size=8,0"], "sweep run train.batch_size=0: config key train.batch_size: 0 is out of range; "
                               "expected a value in [1, inf]"),
])
def test_a_bad_sweep_is_refused_naming_the_run_and_key(overrides, message):
    with pytest.raises(TunelabError) as refused:
        check_runs(expand(overrides), CONF)
    assert str(refused.value).startswith(message)


def test_the_grid_itself_composes_and_validates():
    check_runs(expand(SYNTAX), CONF)  # raises on any bad run
    check_runs(expand(GRID), CONF)


def test_stage_counts_read_what_dvc_did_with_each_stage():
    log = ("Running stage 'check':\n> python stages/check.py\n"  # runs every time by design: not counted
           "Stage 'base' didn't change, skipping\nRunning stage 'train':\n> python stages/train.py\n"
           "Stage 'evaluate@trained' is cached - skipping run, checking out outputs\nRunning stage 'report':\n")
    counts = stage_counts(log)
    assert (counts.executed, counts.skipped, counts.restored, counts.saved) == (2, 1, 1, 2)


def test_stage_counts_read_a_run_that_pulled_its_unchanged_stages():
    """`dvc exp run --pull` (a Ray trial, a teammate's clone) says it pulled an unchanged stage's
    outputs instead of that it skipped it; a stage is counted once, by what finally happened."""
    log = ("Pulling data for stage: 'base'\nPulling data for stage: 'train'\nStage 'benchmark' didn't change, skipping\n"
           "Pulling data for stage: 'evaluate@trained'\nStage 'evaluate@trained' is cached - skipping run, checking out outputs\n"
           "Running stage 'report':\n")
    counts = stage_counts(log)
    assert (counts.executed, counts.skipped, counts.restored) == (1, 3, 1)


@pytest.mark.parametrize("log", [
    "Running stage 'train':\nStage 'report' was restored from the shared cache\n",  # a wording none of ours reads
    "> python stages/train.py\ntrain: val loss 1.2 -> 0.8\n",  # a finished run whose log names no stage at all
])
def test_stage_counts_are_unknown_where_dvcs_log_says_what_they_do_not_read(log):
    """DVC's log is text: where its wording changes, the counts are not shown rather than shown wrong."""
    assert stage_counts(log) is None


WORKERS_GPUS = """
import os
from pathlib import Path

def workers_gpus():  # each queue worker of this repository (its number) -> the CUDA_VISIBLE_DEVICES it runs with
    gpus = {}
    for process in Path("/proc").iterdir():
        try:
            args = (process / "cmdline").read_bytes().split(b"\\0")
            env = dict(v.split(b"=", 1) for v in (process / "environ").read_bytes().split(b"\\0") if b"=" in v)
            cwd = Path(os.readlink(process / "cwd"))
        except OSError:
            continue
        if b"queue-worker" in args and cwd == Path.cwd():
            node = args[args.index(b"queue-worker") + 1].decode()
            gpus[node.split("@")[0].rsplit("-", 1)[1]] = env.get(b"CUDA_VISIBLE_DEVICES", b"").decode()
    return gpus

"""
"""Read in a run's own process: what the kernel holds as each worker's environment, not what tunelab meant."""


@pytest.mark.slow
def test_a_bad_sweep_queues_nothing(baseline_copy):
    project = baseline_copy
    refused = run(project, "tunelab", "-m", "train.lr=1e-4,3e-4", check=False)
    assert refused.returncode == 2
    assert refused.stderr.startswith("error: sweep run train.lr=0.0001: conf/: Could not override 'train.lr'")
    ambiguous = run(project, "tunelab", "train.max_steps=5,10", check=False)
    assert ambiguous.returncode == 2 and "sweeps 2 runs: add -m (multirun)" in ambiguous.stderr
    queued = run(project, sys.executable, "-c", "from tunelab.sweeps.queue import queue_status; print(queue_status())")
    assert queued.stdout.strip() == "{}"  # no experiment in the queue
    assert not (project / "sweeps").exists() and not (project / "mlflow.db").exists()


@pytest.mark.slow
@pytest.mark.reruns_stages
def test_queue_only_queues_the_checked_runs_for_workers_that_run_in_the_background(baseline_copy):
    """Runs that change the benchmark only (bench.new_tokens), so a worker runs two stages, not the pipeline."""
    project = baseline_copy
    queued = run(project, "tunelab", "-m", "bench.new_tokens=3,5", "--name", "later", "--queue-only")
    assert "queued 2 runs of later. Start them with `dvc queue start -j 1`" in queued.stdout
    status = run(project, "dvc", "queue", "status").stdout
    assert [line.split()[1:2] + line.split()[-1:] for line in status.splitlines()[1:3]] == \
        [["later-1", "Queued"], ["later-2", "Queued"]]
    manifest = json.loads((project / "sweeps/later/sweep.json").read_text())
    assert [r["overrides"] for r in manifest["runs"]] == [["bench.new_tokens=3"], ["bench.new_tokens=5"]]

    # start_workers returns while the runs are going (the sweep's progress bar follows them), each worker
    # alone on one of the visible GPUs (none here: CUDA_VISIBLE_DEVICES names them), and wait sees them end
    followed = run(project, sys.executable, "-c", WORKERS_GPUS + "import json; from tunelab.sweeps import queue; "
                   "queue.start_workers(2); print(json.dumps(queue.queue_status())); "
                   "print(json.dumps(workers_gpus())); "
                   "print(json.dumps(queue.wait(['later-1', 'later-2'], lambda *_: None, poll_seconds=2)))",
                   env={"CUDA_VISIBLE_DEVICES": "3,5"})
    at_start, gpus, at_end = map(json.loads, followed.stdout.splitlines()[-3:])
    assert {at_start["later-1"], at_start["later-2"]} <= {"Queued", "Running"}
    assert gpus == {"1": "3", "2": "5"}, followed.stdout
    assert at_end == {"later-1": "Success", "later-2": "Success"}


@pytest.fixture(scope="session")
def swept(tmp_path_factory, baseline) -> tuple[Path, subprocess.CompletedProcess]:
    """A copy of the committed baseline after a 2 strategies × 1 learning rate sweep on 2 workers
    (made once per session, like the baseline, whichever test worker asks first)."""
    def sweep(folder: Path) -> None:
        project = copy_project(baseline.repo, folder / "repo")
        save_run(folder / "sweep.json", run(project, "tunelab", "-m", *GRID, "--jobs", "2", "--name", SWEEP))

    folder = made_once(tmp_path_factory, "sweep", sweep)
    return folder / "repo", load_run(folder / "sweep.json")


def a_share_of_the_test_rows(accuracy: float, rows: int = 12) -> bool:
    """An accuracy the tiny test split can give: k/12 for a whole k, to the 4 decimals metrics keep (±5e-5),
    not just any number in [0, 1]."""
    return abs(accuracy - round(accuracy * rows) / rows) <= 5e-5


@pytest.mark.slow
def test_a_sweep_runs_every_combination_as_a_cached_dvc_experiment(swept, baseline):
    project, result = swept
    names = [f"{SWEEP}-{i}" for i in range(1, RUNS + 1)]
    results = json.loads((project / "sweeps" / SWEEP / "results.json").read_text())
    assert [r["name"] for r in results["runs"]] == names
    assert {r["status"] for r in results["runs"]} == {"Success"}
    assert results["runs"][0]["overrides"] == ["strategy=ia3", "train.learning_rate=0.0003"]
    for entry in results["runs"]:
        stages = entry["stages"]
        assert stages["executed"] + stages["skipped"] + stages["restored"] == len(STAGES)
        # fetch, prepare, base, format and the prompting baselines do not depend on the swept keys
        assert stages["skipped"] + stages["restored"] >= 5
        assert a_share_of_the_test_rows(entry["metrics"]["trained/zero_shot/choice"]["accuracy"])
        assert entry["metrics"]["trained/zero_shot/choice"]["train_seconds"] > 0
    # grid-2 is the baseline's own configuration (lora, 3e-4): DVC restored its figures, which must be the baseline's
    assert results["runs"][1]["metrics"] == json.loads((baseline.repo / "metrics/eval.json").read_text())

    shown = json.loads(run(project, "dvc", "exp", "show", "--json").stdout)
    experiments = {group["revs"][0]["name"]: group["revs"][0]["data"] for baseline in shown
                   for group in baseline.get("experiments") or []}
    assert set(names) <= set(experiments)
    params = experiments[f"{SWEEP}-1"]["params"]["params.yaml"]["data"]
    assert (params["strategy"]["name"], params["train"]["learning_rate"], params["tracking"]["sweep"]) == \
        ("ia3", 3e-4, SWEEP)
    eval_metrics = experiments[f"{SWEEP}-1"]["metrics"]["metrics/eval.json"]["data"]
    assert eval_metrics == results["runs"][0]["metrics"]  # the report's figures are DVC's

    # dvc metrics diff and dvc plots diff read the same figures
    diff = json.loads(run(project, "dvc", "metrics", "diff", f"{SWEEP}-1", f"{SWEEP}-2", "--all", "--json").stdout)
    accuracy = diff["metrics/eval.json"]["trained/zero_shot/choice.accuracy"]
    assert (accuracy["old"], accuracy["new"]) == tuple(
        results["runs"][i]["metrics"]["trained/zero_shot/choice"]["accuracy"] for i in (0, 1))
    plots = json.loads(run(project, "dvc", "plots", "diff", f"{SWEEP}-1", f"{SWEEP}-2", "--json").stdout)
    assert not plots.get("errors")
    assert {"score_vs_train_time", "score_vs_latency", "metrics/report/score_vs_train_time.png"} <= set(plots["data"])

    report = (project / "sweeps" / SWEEP / "report.md").read_text()
    assert report.startswith(f"# Sweep {SWEEP}\n\n`tunelab -m {' '.join(GRID)} --jobs 2 --name {SWEEP}`\n\n{RUNS} runs;")
    assert "| grid-1 | strategy=ia3 train.learning_rate=0.0003 | trained |" in report
    # one recommendation across the runs, paired on the test rows read from each experiment's predictions
    assert "\n## Recommendation\n\n**`" in report and "within a margin of 0.02" in report
    assert results["recommended"].split(":")[0] in names
    assert (project / "sweeps" / SWEEP / "score_vs_train_time.png").stat().st_size > 10_000
    assert "Stage executions: " in result.stdout


@pytest.mark.slow
def test_a_sweep_is_one_mlflow_parent_run_over_a_run_per_combination(swept):
    import mlflow

    from tunelab.reporting.tables import recommended, row_key, rows_of

    project, _ = swept
    client = mlflow.MlflowClient(tracking_uri=f"sqlite:///{project / 'mlflow.db'}")
    experiment = client.get_experiment_by_name("tunelab")
    [sweep] = client.search_runs([experiment.experiment_id], f"tags.`tunelab.sweep` = '{SWEEP}'")
    assert sweep.info.run_name == SWEEP and sweep.data.params["overrides"] == " ".join(GRID)
    pipelines = client.search_runs([experiment.experiment_id], f"tags.`mlflow.parentRunId` = '{sweep.info.run_id}'")
    assert sorted(r.info.run_name for r in pipelines) == [f"{SWEEP}-{i}" for i in range(1, RUNS + 1)]
    assert {r.data.params["strategy.name"] for r in pipelines} == {"lora", "ia3"}
    executed = {r["name"]: r["stages"]["executed"]
                for r in json.loads((project / "sweeps" / SWEEP / "results.json").read_text())["runs"]}
    metrics = {r["name"]: r["metrics"] for r in json.loads((project / "sweeps" / SWEEP / "results.json").read_text())["runs"]}
    headline = {name: figures[f"trained/{HEADLINE}"]["accuracy"] for name, figures in metrics.items()}
    for pipeline in pipelines:
        assert pipeline.data.metrics["accuracy"] == headline[pipeline.info.run_name]  # its eval.headline, from DVC
        assert pipeline.data.tags["dvc.lock.models/trained"]  # lineage of the whole pipeline run
        stages = client.search_runs([experiment.experiment_id], f"tags.`mlflow.parentRunId` = '{pipeline.info.run_id}'")
        assert len(stages) == executed[pipeline.info.run_name]  # one run per stage that ran
        if stages:
            assert {"train", "report"} <= {r.data.tags["tunelab.stage"] for r in stages}
            # the report stage's recommendation, by the rule the report and the sweep share
            assert pipeline.data.tags["tunelab.recommended"] == row_key(recommended(rows_of(metrics[pipeline.info.run_name])))
            assert "evaluate@base" not in {r.data.tags["tunelab.stage"] for r in stages}  # cached: never re-run
            assert {r.info.status for r in stages} == {"FINISHED"}
        else:  # the baseline's own configuration: every stage cached, its figures from dvc exp show
            assert pipeline.data.tags["tunelab.figures"] == "from dvc exp show: no stage had to run"
    assert 0 in executed.values()  # grid-2 is strategy=lora train.learning_rate=3e-4: the baseline
    artifacts = {a.path for a in client.list_artifacts(sweep.info.run_id, "sweep-report")}
    assert "sweep-report/report.md" in artifacts
    recommended = json.loads((project / "sweeps" / SWEEP / "results.json").read_text())["recommended"]
    assert sweep.data.tags["tunelab.recommended"] == recommended


@pytest.fixture(scope="module")
def mlflow_server(swept, tmp_path_factory) -> str:
    """A real `mlflow server` on localhost over the sweep's store; its URL."""
    import socket
    import time
    import urllib.request

    project, _ = swept
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    log = (tmp_path_factory.mktemp("mlflow-server") / "server.log").open("w")
    server = subprocess.Popen([str(Path(sys.executable).parent / "mlflow"), "server",
                               "--backend-store-uri", f"sqlite:///{project / 'mlflow.db'}",
                               "--host", "127.0.0.1", "--port", str(port), "--workers", "1"],
                              cwd=project, stdout=log, stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 120
    while True:
        try:
            if urllib.request.urlopen(f"{url}/health", timeout=2).read() == b"OK":
                break
        except OSError:
            if server.poll() is not None or time.monotonic() > deadline:
                raise AssertionError(f"mlflow server did not start: {Path(log.name).read_text()[-2000:]}") from None
            time.sleep(1)
    yield url
    server.terminate()
    server.wait(timeout=30)
    log.close()


def chromium():
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for argument in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage", "--window-size=2000,1300"):
        options.add_argument(argument)
    return webdriver.Chrome(service=Service(CHROMEDRIVER), options=options)


def page_lines(driver) -> list[str]:
    from selenium.webdriver.common.by import By

    return driver.find_element(By.TAG_NAME, "body").text.splitlines()


def chart_lines(lines: list[str], title: str) -> list[str]:
    """The text of one chart of the runs page's chart view: its values and run names."""
    start = lines.index(title) + 1
    end = next(i for i in range(start, len(lines)) if lines[i].endswith("accuracy") or lines[i] == "System metrics")
    return lines[start:end]


@pytest.mark.slow
def test_the_mlflow_ui_shows_the_sweeps_runs_and_their_accuracy(swept, mlflow_server, tmp_path):
    if not Path(CHROMEDRIVER).exists() and os.environ.get("CI") != "true":  # CI=true: mandatory, fails below
        pytest.skip("needs Debian's chromium and chromium-driver: sudo apt-get install chromium chromium-driver")
    import mlflow
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import WebDriverWait

    project, _ = swept
    client = mlflow.MlflowClient(tracking_uri=f"sqlite:///{project / 'mlflow.db'}")
    experiment = client.get_experiment_by_name("tunelab")
    names = [f"{SWEEP}-{i}" for i in range(1, RUNS + 1)]
    accuracy = {r.info.run_name: r.data.metrics["accuracy"]
                for r in client.search_runs([experiment.experiment_id], "attributes.run_name LIKE 'grid-%'")}
    assert sorted(accuracy) == names

    runs_page = f"{mlflow_server}/#/experiments/{experiment.experiment_id}/runs?searchFilter=" \
                f"attributes.run_name%20LIKE%20%27{SWEEP}-%25%27"
    driver = chromium()
    try:
        driver.get(runs_page)
        wait = WebDriverWait(driver, 90)
        sweep_link = wait.until(lambda d: d.find_element(By.LINK_TEXT, SWEEP))
        sweep_link.find_element(By.XPATH, "./ancestor::*[@role='gridcell'][1]").find_element(By.TAG_NAME, "button").click()
        wait.until(lambda d: set(names) <= set(page_lines(d)))  # the runs, nested under the sweep

        driver.get(f"{runs_page}&compareRunsMode=CHART")
        wait.until(lambda d: "accuracy" in page_lines(d) and set(names) <= set(chart_lines(page_lines(d), "accuracy")))
        chart = chart_lines(page_lines(driver), "accuracy")
        assert {f"{value:.2f}" for value in accuracy.values()} <= set(chart)  # the bars' labels
        driver.save_screenshot(str(tmp_path / "mlflow-sweep.png"))
    finally:
        driver.quit()
    if os.environ.get("TUNELAB_UPDATE_SCREENSHOTS"):
        shutil.copy(tmp_path / "mlflow-sweep.png", REPO_ROOT / "docs" / "mlflow-sweep.png")


def test_an_experiment_missing_from_one_queue_status_is_not_taken_for_failed():
    """`dvc queue status` can miss a task for a poll while a worker picks it up; only one that stays
    gone (removed or killed) is recorded as failed."""
    from tunelab.sweeps.queue import wait

    polls = iter([{"a": "Queued", "b": "Queued"}, {"a": "Success"}, {"b": "Running"}, {"b": "Success"}])
    ended: list[tuple[str, str]] = []
    assert wait(["a", "b"], lambda name, status: ended.append((name, status)), poll_seconds=0,
                statuses=lambda: next(polls)) == {"a": "Success", "b": "Success"}
    assert ended == [("a", "Success"), ("b", "Success")]
    gone = iter([{"a": "Running"}, {}, {}, {}])
    assert wait(["a"], lambda *_: None, poll_seconds=0, statuses=lambda: next(gone)) == {"a": "Failed"}


def test_a_run_made_before_the_newer_eval_keys_still_has_its_headline():
    """Its params are what its commit composed: no eval.prompt_search, no eval.extra_test_sets."""
    from configs import composed

    from tunelab.sweeps.summary import SweepRun

    old_eval = {k: v for k, v in composed()["eval"].items() if k not in ("prompt_search", "extra_test_sets")}
    old_eval["prompting"] = {k: v for k, v in old_eval["prompting"].items() if k != "optimized"}
    run_params = {"eval": {**old_eval, "headline": "zero_shot/generate"}}
    assert SweepRun("s-1", [], "Success", run_params, {}, {}, None).headline == ("zero_shot", "generate")


@pytest.mark.parametrize("visible, gpus", [("3,5", ["3", "5"]), (" 1 , 2", ["1", "2"]), ("", []), ("-1", []),
                                           ("0,-1,2", ["0"])])
def test_the_visible_gpus_are_cuda_visible_devices_up_to_an_invalid_one(monkeypatch, visible, gpus):
    """As CUDA reads the variable: the devices listed before the first invalid entry (-1 hides the rest)."""
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", visible)
    assert visible_gpus() == gpus


def test_a_run_left_running_by_a_stopped_worker_is_counted_failed_not_waited_for_forever(capsys):
    """DVC's temporary queue worker can stop itself mid-run (its monitor reads a status query that a busy
    worker answers late as an empty queue): the run stays "Running" with no worker left to end it."""
    from tunelab.sweeps.queue import STALLED_POLLS, wait

    ended: list[tuple[str, str]] = []
    orphaned = wait(["a"], lambda name, status: ended.append((name, status)), poll_seconds=0,
                    statuses=lambda: {"a": "Running"}, workers=lambda: 0)
    assert orphaned == {"a": "Failed"} and ended == [("a", "Failed")]
    assert "a: DVC's queue says it is running, but no queue worker is left" in capsys.readouterr().out
    polls = iter([{"a": "Running"}] * (STALLED_POLLS + 2) + [{"a": "Success"}])
    assert wait(["a"], lambda *_: None, poll_seconds=0, statuses=lambda: next(polls), workers=lambda: 1) == \
        {"a": "Success"}  # a live worker: still running, however long
