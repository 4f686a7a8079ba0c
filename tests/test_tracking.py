"""MLflow runs of stages: lineage tags, whole params, no run left open after a crash or a kill."""

import json
import os
import signal
import socket
import sqlite3
import subprocess
import sys
import time
from contextlib import closing
from pathlib import Path

import pytest
import yaml
from conftest import REPO_ROOT

from tunelab.config.compose import compose_conf
from tunelab.tracking.lineage import pip_freeze, stage_input_hashes
from tunelab.tracking.mlflow_run import CUT_MARK, MAX_PARAM_LENGTH, stage_run, tracking_uri

PIPELINE = {"stages": {
    "format": {"cmd": "python stages/format.py", "outs": ["data/formatted/train.jsonl"]},
    "train": {"cmd": "python stages/train.py", "deps": ["stages/train.py", "data/formatted/train.jsonl"],
              "outs": ["models/trained"]},
}}
LOCK = {"schema": "2.0", "stages": {
    "format": {"cmd": "python stages/format.py", "outs": [{"path": "data/formatted/train.jsonl", "md5": "new-format"}]},
    "train": {"cmd": "python stages/train.py",
              "deps": [{"path": "stages/train.py", "md5": "source"}, {"path": "data/formatted/train.jsonl", "md5": "old"}],
              "outs": [{"path": "models/trained", "md5": "old-model.dir"}]},
}}


@pytest.fixture
def store(tmp_path, monkeypatch) -> str:
    """A DVC repository (its dvc.yaml and dvc.lock) with a fresh sqlite MLflow store, as the working directory."""
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    monkeypatch.delenv("DVC_ROOT", raising=False)
    subprocess.run([sys.executable, "-m", "dvc", "init", "--no-scm", "-q"], check=True)
    (tmp_path / "dvc.yaml").write_text(yaml.safe_dump(PIPELINE))
    (tmp_path / "dvc.lock").write_text(yaml.safe_dump(LOCK))
    return f"sqlite:///{tmp_path / 'mlflow.db'}"


def params_for(uri: str, **sections) -> dict:
    return {"tracking": {"uri": uri, "experiment": "tests", "enabled": True, "lock_timeout": 60}, **sections}


def pipeline_statuses(uri: str) -> list[str]:
    import mlflow

    client = mlflow.MlflowClient(tracking_uri=uri)
    experiment = client.get_experiment_by_name("tests")
    return [r.info.status for r in client.search_runs([experiment.experiment_id]) if "tunelab.pipeline" in r.data.tags]


def stage_runs(uri: str):
    import mlflow

    client = mlflow.MlflowClient(tracking_uri=uri)
    experiment = client.get_experiment_by_name("tests")
    return client, [r for r in client.search_runs([experiment.experiment_id]) if "tunelab.stage" in r.data.tags]


def test_a_stage_reads_its_inputs_hashes_from_the_producing_stages_entry(store):
    # train's own entry still holds the hash of the previous run; format's is current
    assert stage_input_hashes("train") == {"dvc.lock.data/formatted/train.jsonl": "new-format"}
    assert stage_input_hashes("format") == {}  # it reads no other stage's output
    assert stage_input_hashes("no-such-stage") == {}


def test_a_stage_run_carries_commit_lineage_whole_params_and_the_packages(store, tmp_path):
    template = "Is this review positive? " * 300  # over MLflow's limit for one param value
    with stage_run("train", params_for(store, prompt={"template": template}), sections=("prompt",)):
        pass
    client, [run] = stage_runs(store)
    assert run.info.status == "FINISHED"
    assert run.data.tags["dvc.lock.data/formatted/train.jsonl"] == "new-format"
    value = run.data.params["prompt.template"]
    assert len(value) == MAX_PARAM_LENGTH and value.endswith(CUT_MARK)
    whole = yaml.safe_load(Path(client.download_artifacts(run.info.run_id, "params.yaml", str(tmp_path))).read_text())
    assert whole["prompt"]["template"] == template
    freeze = Path(client.download_artifacts(run.info.run_id, "pip-freeze.txt", str(tmp_path))).read_text()
    assert f"mlflow=={__import__('mlflow').__version__}" in freeze.splitlines()
    assert freeze == pip_freeze()


def test_an_error_in_a_stage_ends_its_run_failed(store):
    with pytest.raises(RuntimeError), stage_run("train", params_for(store), sections=()):
        raise RuntimeError("out of memory")
    _, [run] = stage_runs(store)
    assert run.info.status == "FAILED"


STAGE_THAT_HANGS = """
import sys, time
from tunelab.stage import run_stage
from tunelab.tracking.mlflow_run import stage_run

def main():
    params = {"tracking": {"uri": sys.argv[1], "experiment": "tests", "enabled": True, "lock_timeout": 60}}  # as params_for()
    with stage_run("train", params, sections=()):
        print("started", flush=True)
        time.sleep(600)

run_stage(main)
"""


def start_hanging_stage(uri: str) -> subprocess.Popen:
    stage = subprocess.Popen([sys.executable, "-c", STAGE_THAT_HANGS, uri], stdout=subprocess.PIPE, text=True)
    assert stage.stdout.readline().strip() == "started"
    return stage


def test_sigterm_ends_the_stage_and_its_run_failed(store):
    stage = start_hanging_stage(store)
    stage.send_signal(signal.SIGTERM)
    assert stage.wait(timeout=60) == 128 + signal.SIGTERM
    _, [run] = stage_runs(store)
    assert run.info.status == "FAILED"


def test_a_run_left_open_by_a_killed_stage_is_failed_by_the_stages_next_run(store):
    stage = start_hanging_stage(store)
    stage.kill()  # SIGKILL: nothing in the process can close its run
    stage.wait(timeout=60)
    _, [orphan] = stage_runs(store)
    assert orphan.info.status == "RUNNING"
    assert pipeline_statuses(store) == ["FINISHED"]  # the pipeline's run is never resumed, so never left RUNNING
    with stage_run("train", params_for(store), sections=()):
        pass
    _, runs = stage_runs(store)
    statuses = {r.info.run_id: (r.info.status, r.data.tags.get("tunelab.abandoned")) for r in runs}
    assert statuses[orphan.info.run_id] == ("FAILED", "its process died without closing the run")
    assert sorted(status for status, _ in statuses.values()) == ["FAILED", "FINISHED"]


def test_a_relative_store_is_the_repositorys_even_from_a_queued_experiments_copy(monkeypatch, tmp_path):
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    monkeypatch.setenv("DVC_ROOT", str(tmp_path))  # DVC sets it to the real root in .dvc/tmp/exps/ copies
    assert tracking_uri("sqlite:///mlflow.db") == f"sqlite:///{tmp_path}/mlflow.db"
    assert tracking_uri("sqlite:////elsewhere/m.db") == "sqlite:////elsewhere/m.db"
    assert tracking_uri("http://127.0.0.1:5000") == "http://127.0.0.1:5000"
    monkeypatch.setenv("MLFLOW_TRACKING_URI", "http://tracking:5000")
    assert tracking_uri("sqlite:///mlflow.db") == "http://tracking:5000"


def down_server() -> str:
    """A tracking URI nobody answers (a port just closed), with MLflow's HTTP retries off."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    return f"http://127.0.0.1:{port}"


FAST_FAILING_HTTP = {"MLFLOW_HTTP_REQUEST_MAX_RETRIES": "0", "MLFLOW_HTTP_REQUEST_TIMEOUT": "5"}


def test_a_store_that_cannot_be_reached_warns_once_and_the_stage_works_on(tmp_path, monkeypatch, capsys):
    for name, value in FAST_FAILING_HTTP.items():
        monkeypatch.setenv(name, value)
    monkeypatch.setenv("MLFLOW_TRACKING_URI", down_server())  # mlflow.set_tracking_uri exports it: undone after
    metrics = tmp_path / "metrics.json"
    with stage_run("train", params_for("sqlite:///unused.db"), sections=()) as run:
        run.log_metrics({"loss": 1.0})
        run.log_artifact(__file__)
        run.write_metrics(metrics, {"loss": 1.0})
    written = json.loads(metrics.read_text())
    assert written["loss"] == 1.0 and written["tracking"].startswith("incomplete: ")
    warnings = [line for line in capsys.readouterr().err.splitlines() if line.startswith("warning: MLflow tracking failed")]
    assert len(warnings) == 1


def test_a_store_failing_mid_run_is_said_in_the_metrics_already_written(store, tmp_path, monkeypatch, capsys):
    import mlflow

    for name, value in FAST_FAILING_HTTP.items():
        monkeypatch.setenv(name, value)
    metrics = tmp_path / "metrics.json"
    with stage_run("train", params_for(store), sections=()) as run:
        run.write_metrics(metrics, {"loss": 1.0})
        assert json.loads(metrics.read_text())["tracking"] == "complete"
        monkeypatch.setenv("MLFLOW_TRACKING_URI", down_server())  # the server goes away while the stage works
        mlflow.set_tracking_uri(os.environ["MLFLOW_TRACKING_URI"])
        run.log_metrics({"loss": 0.5})
        run.log_metrics({"loss": 0.25})  # no second warning, no error
    assert json.loads(metrics.read_text())["tracking"].startswith("incomplete: ")
    assert len([line for line in capsys.readouterr().err.splitlines() if line.startswith("warning:")]) == 1


def test_a_stage_with_its_store_down_finishes_its_work(tmp_path):
    """The prepare stage as a process, its tracking server down: exit 0, outputs written, metrics say so."""
    (tmp_path / "data/raw/main").mkdir(parents=True)
    (tmp_path / "data/raw/main/reviews.jsonl").write_text("".join(
        json.dumps({"text": f"review {i}", "label": "positive" if i % 2 else "negative"}) + "\n" for i in range(40)))
    (tmp_path / "data/raw/source.json").write_text('{"file": "reviews.jsonl"}')
    params = compose_conf(REPO_ROOT / "conf", ["data=local_file", "data.source.path=unused", "data.test_size=10",
                                               "data.val_size=10"])
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(params))
    result = subprocess.run([sys.executable, str(REPO_ROOT / "stages/prepare.py")], cwd=tmp_path, capture_output=True,
                            text=True, env={**os.environ, **FAST_FAILING_HTTP, "MLFLOW_TRACKING_URI": down_server()})
    assert result.returncode == 0, result.stderr
    assert "warning: MLflow tracking failed" in result.stderr
    stats = json.loads((tmp_path / "data/prepared/stats.json").read_text())
    assert stats["split_sizes"]["test"] == 10 and stats["tracking"].startswith("incomplete: ")


TWO_STAGES_AT_ONCE = """
import sys, time
from pathlib import Path
from tunelab.tracking.mlflow_run import stage_run

uri, barrier, name = sys.argv[1:]
while not Path(barrier).exists():  # both processes have imported everything; now they race
    time.sleep(0.001)
params = {"tracking": {"uri": uri, "experiment": "tests", "enabled": True, "lock_timeout": 60}}
with stage_run(name, params, sections=()) as run:
    run.log_metrics({"step": 1.0})
    print(run.status())
"""


def test_two_stages_opening_one_new_store_at_once_both_log(tmp_path, monkeypatch):
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    uri = f"sqlite:///{tmp_path / 'new.db'}"
    barrier = tmp_path / "go"
    names = ("evaluate@base", "train")
    logs = {name: (tmp_path / f"{name}.out", tmp_path / f"{name}.err") for name in names}
    stages = [subprocess.Popen([sys.executable, "-c", TWO_STAGES_AT_ONCE, uri, str(barrier), name], cwd=tmp_path,
                               stdout=logs[name][0].open("w"), stderr=logs[name][1].open("w")) for name in names]
    time.sleep(8)  # past both imports
    barrier.touch()
    codes = [stage.wait(timeout=120) for stage in stages]
    outputs = {name: (out.read_text(), err.read_text()[-2000:]) for name, (out, err) in logs.items()}
    assert codes == [0, 0], outputs
    assert [out.strip() for out, _ in outputs.values()] == ["complete", "complete"], outputs
    _, runs = stage_runs(uri)
    assert sorted(r.data.tags["tunelab.stage"] for r in runs) == ["evaluate@base", "train"]
    assert {r.info.status for r in runs} == {"FINISHED"} and len(pipeline_statuses(uri)) == 1
    with closing(sqlite3.connect(tmp_path / "new.db")) as connection:
        assert connection.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
