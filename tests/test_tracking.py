"""MLflow runs of stages: lineage tags, whole params, no run left open after a crash or a kill."""

import signal
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

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
    return {"tracking": {"uri": uri, "experiment": "tests", "enabled": True}, **sections}


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
    params = {"tracking": {"uri": sys.argv[1], "experiment": "tests", "enabled": True}}  # as params_for()
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
