"""The team's tracking server for real: PostgreSQL from the machine's binaries, `mlflow server` on it
(``tunelab tracking-server``), both on loopback and always stopped; a sweep whose workers log to it,
claims that keep one parent run per configuration, secrets kept out of what it records."""

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from pathlib import Path

import pytest
from pipeline_project import run

NEEDS = ("initdb", "pg_ctl")


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def require_postgres() -> None:
    if missing := [name for name in NEEDS if shutil.which(name) is None]:
        if os.environ.get("CI") == "true":
            pytest.fail(f"CI: PostgreSQL's server binaries {missing} are needed (Debian: apt-get install postgresql)")
        pytest.skip(f"PostgreSQL's server binaries {missing} are missing: apt-get install postgresql")


def wait_healthy(url: str, server: subprocess.Popen, seconds: float = 180) -> None:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if server.poll() is not None:
            raise AssertionError(f"the tracking server exited with {server.returncode}")
        try:
            with urllib.request.urlopen(f"{url}/health", timeout=2) as answer:
                if answer.status == 200:
                    return
        except OSError:
            time.sleep(0.5)
    raise AssertionError(f"the tracking server at {url} did not answer /health in {seconds} s")


@pytest.fixture(scope="module")
def tracking_server():
    """``tunelab tracking-server`` on a PostgreSQL cluster it makes; (url, cluster folder, its port)."""
    require_postgres()
    # not under pytest's temp folders (mode 700): as root the cluster runs as the postgres user, who must reach it
    folder = Path(tempfile.mkdtemp(prefix="tunelab-team-"))
    os.chmod(folder, 0o755)
    port, pg_port = free_port(), free_port()
    command = [sys.executable, "-m", "tunelab.cli", "tracking-server", "--pgdata", str(folder / "pg"), "--pg-port",
               str(pg_port), "--artifacts", str(folder / "artifacts"), "--port", str(port)]
    log = open(folder / "server.log", "w")
    server = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    url = f"http://127.0.0.1:{port}"
    try:
        wait_healthy(url, server)
        yield url, folder / "pg", pg_port
    finally:
        if server.poll() is None:
            os.killpg(server.pid, signal.SIGTERM)
        server.wait(timeout=60)
        log.close()
        stopped = subprocess.run(["pg_ctl", "-D", str(folder / "pg"), "status"], capture_output=True,
                                 user="postgres" if os.geteuid() == 0 else None).returncode
        shutil.rmtree(folder, ignore_errors=True)
        assert stopped in (3, 4)  # the cluster stopped with its server (4: it never started)


def client_of(url: str):
    import mlflow

    return mlflow.MlflowClient(tracking_uri=url)


def test_the_server_keeps_runs_in_postgresql_and_artifacts_in_its_folder(tracking_server):
    url, cluster, pg_port = tracking_server
    client = client_of(url)
    experiment = client.create_experiment("postgres-check")
    run_id = client.create_run(experiment).info.run_id
    client.log_metric(run_id, "accuracy", 0.9)
    client.log_text(run_id, "hello", "note.txt")  # proxied: the client writes through the server
    assert client.get_run(run_id).data.metrics["accuracy"] == 0.9
    assert any((cluster.parent / "artifacts").rglob("note.txt"))
    import psycopg

    with psycopg.connect(host=str(cluster), port=pg_port, user="tunelab", dbname="mlflow") as connection:
        assert connection.execute("SELECT value FROM metrics WHERE run_uuid = %s", (run_id,)).fetchone()[0] == 0.9


def test_workers_that_start_the_same_pipeline_at_once_make_one_parent_run(tracking_server):
    from tunelab.tracking.mlflow_run import PIPELINE_TAG, _pipeline_run_id, config_hash, sweep_run_id

    url, _, _ = tracking_server
    client = client_of(url)
    experiment = client.create_experiment("claims")
    sweep_run_id(client, experiment, "race")  # the driver makes the sweep's run before any worker starts
    params = {"train": {"seed": 1}, "tracking": {"sweep": "race"}}
    start, found = threading.Barrier(4), []

    def worker() -> None:
        start.wait()
        found.append(_pipeline_run_id(client_of(url), experiment, params, "race"))

    threads = [threading.Thread(target=worker) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    live = client.search_runs([experiment], f"tags.`{PIPELINE_TAG}` = '{config_hash(params)}'")
    assert len(live) == 1 and set(found) == {live[0].info.run_id}


def test_no_password_or_token_reaches_a_param_a_tag_or_the_params_artifact(tracking_server, tmp_path, monkeypatch):
    from tunelab.tracking.mlflow_run import stage_run

    url, _, _ = tracking_server
    with_password = url.replace("http://", "http://alice:s3cret-pw@")  # the server ignores it; requests sends it
    monkeypatch.setenv("MLFLOW_TRACKING_URI", with_password)
    monkeypatch.chdir(tmp_path)
    params = {"tracking": {"uri": with_password, "experiment": "secrets", "enabled": True, "lock_timeout": 60},
              "data": {"source": {"url": "https://bob:tok3n-xyz@example.com/data.csv", "api_key": "sk-abc123"}}}
    with stage_run("check", params, sections=("tracking", "data")) as staged:
        staged.set_tag("note", "ok")
    client = client_of(url)
    experiment = client.get_experiment_by_name("secrets").experiment_id
    recorded = ""
    for found in client.search_runs([experiment]):  # the pipeline's run and the stage's
        artifact = Path(client.download_artifacts(found.info.run_id, "params.yaml", str(tmp_path / found.info.run_id)))
        recorded += json.dumps(found.data.params) + json.dumps(found.data.tags) + artifact.read_text()
    assert "alice" in recorded and "***" in recorded  # it was logged, redacted
    for secret in ("s3cret-pw", "tok3n-xyz", "sk-abc123"):
        assert secret not in recorded


def test_a_database_that_refuses_the_password_is_one_line_before_mlflow_starts(tracking_server, tmp_path):
    _, _, pg_port = tracking_server
    refused = subprocess.run([sys.executable, "-m", "tunelab.cli", "tracking-server", "--database-url",
                              f"postgresql+psycopg://tunelab:wrong-pw@127.0.0.1:{pg_port}/mlflow", "--artifacts",
                              str(tmp_path), "--port", str(free_port())], capture_output=True, text=True, timeout=120)
    assert refused.returncode == 2
    [line] = refused.stderr.strip().splitlines()
    assert line.startswith(f"error: the tracking database postgresql+psycopg://tunelab:***@127.0.0.1:{pg_port}/mlflow "
                           "refused the connection: ") and "password authentication failed" in line
    assert "wrong-pw" not in refused.stderr + refused.stdout


@pytest.mark.slow
def test_a_sweep_with_two_workers_logs_to_the_server_under_one_parent_run(tracking_server, baseline_copy):
    from tunelab.tracking.mlflow_run import STAGE_TAG, SWEEP_TAG

    url, _, _ = tracking_server
    project = baseline_copy
    # the baseline's own configuration (every stage cached) and another margin (only the report reruns)
    swept = run(project, "tunelab", "-m", "eval.recommend.margin=0.02,0.05", "--jobs", "2", "--name", "team",
                env={"MLFLOW_TRACKING_URI": url})
    assert "team-1" in swept.stdout and "team-2" in swept.stdout
    client = client_of(url)
    experiment = client.get_experiment_by_name("tunelab").experiment_id
    [sweep] = client.search_runs([experiment], f"tags.`{SWEEP_TAG}` = 'team'")
    pipelines = client.search_runs([experiment], f"tags.`mlflow.parentRunId` = '{sweep.info.run_id}'")
    assert sorted(r.info.run_name for r in pipelines) == ["team-1", "team-2"]
    stages = {r.data.tags[STAGE_TAG]: r for pipeline in pipelines for r in
              client.search_runs([experiment], f"tags.`mlflow.parentRunId` = '{pipeline.info.run_id}'")}
    assert set(stages) == {"report"} and stages["report"].info.status == "FINISHED"  # nothing else had to run
    changed = next(r for r in pipelines if r.info.run_name == "team-2")
    assert changed.data.tags["tunelab.recommended"] and changed.data.params["eval.recommend.margin"] == "0.05"
    assert not (project / "mlflow.db").exists()  # nothing went to a local store


@pytest.mark.slow
def test_the_recommended_variant_is_registered_reloads_with_the_evaluators_answers_and_serves(
        tracking_server, baseline_copy, tmp_path, monkeypatch):
    import mlflow
    import openai
    import yaml

    from tunelab.config.compose import compose_conf
    from tunelab.evaluation.prompting import build_prompts
    from tunelab.serving.engines import Server
    from tunelab.team.model_registry import CHAMPION

    url, _, _ = tracking_server
    project, env = baseline_copy, {"MLFLOW_TRACKING_URI": url}
    bad = run(project, "tunelab", "register", "--name", "my model!", env=env, check=False)
    assert bad.returncode == 2 and bad.stderr.strip().splitlines() == [
        "error: registry name 'my model!': use letters, digits, '.', '_' and '-' (at most 128, starting with a letter or "
        "digit), e.g. tunelab-sentiment"]
    refused = run(project, "tunelab", "register", "--variant", "int8_dynamic", "--name", "tiny", env=env, check=False)
    assert refused.returncode == 2 and "register merged" in refused.stderr and len(refused.stderr.splitlines()) == 1

    first = run(project, "tunelab", "register", "--variant", "merged", "--name", "tiny", env=env)
    [line] = first.stdout.strip().splitlines()  # the outcome alone: none of MLflow's run links and notes
    assert line.startswith("tiny version 1 (merged/") and line.endswith(f"now {CHAMPION} (there was none)")
    again = run(project, "tunelab", "register", "--variant", "merged", "--name", "tiny", env=env)
    assert again.stdout.startswith("tiny version 1 ") and f"already {CHAMPION}" in again.stdout  # not copied twice
    client = mlflow.MlflowClient(tracking_uri=url)
    [version] = client.search_model_versions("name = 'tiny'")
    lock = yaml.safe_load((project / "dvc.lock").read_text())["stages"]
    deploy = next(out["md5"] for out in lock["quantize"]["outs"] if out["path"] == "models/deploy")
    assert version.tags["dvc_lock_hash"] == deploy and version.tags["git_commit"] and version.tags["data_fingerprint"]
    assert version.tags["metric"] == "accuracy" and "[" in version.tags["score"]

    # loaded back as MLflow loads any model: the evaluator's greedy answers on the first test rows (the process's
    # MLflow URIs are global, and an earlier test in this worker may have set them to another server)
    monkeypatch.setenv("MLFLOW_TRACKING_URI", url)
    mlflow.set_tracking_uri(url)
    model = mlflow.pyfunc.load_model(f"models:/tiny@{CHAMPION}")
    conf = compose_conf(project / "conf")
    rows = [json.loads(line) for line in (project / "data/prepared/test.jsonl").read_text().splitlines()[:4]]
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(project / "models/deploy/merged/model")
    prompts = build_prompts(rows, to_prompt(conf), conf["data"]["labels"], tokenizer)
    evaluated = {r["id"]: r["generate"]["texts"][0] for r in map(json.loads, (
        project / "data/predictions/merged/zero_shot.jsonl").read_text().splitlines())}
    answers = model.predict([p.text for p in prompts],
                            params={"max_new_tokens": conf["eval"]["prompting"]["zero_shot"]["max_new_tokens"]})
    assert answers == [evaluated[r["id"]] for r in rows]

    port = free_port()
    command = [str(Path(sys.executable).parent / "tunelab"), "serve", f"models:/tiny@{CHAMPION}", f"serve.port={port}"]
    with Server(command, f"http://127.0.0.1:{port}/v1", tmp_path / "serve.log", cwd=project) as server:
        openai_client = openai.OpenAI(base_url=server.base_url, api_key="-", max_retries=0, timeout=60)
        assert [m.id for m in openai_client.models.list().data] == [f"tunelab-tiny-{CHAMPION}"]


def to_prompt(conf: dict):
    from tunelab.config.load import to_section
    from tunelab.config.schema import PromptConfig

    return to_section(PromptConfig, "prompt", conf["prompt"])


DYING_STAGE = """
import json, os, signal, sys, time
os.environ["MLFLOW_TRACKING_URI"] = sys.argv[1]  # this server, whatever the caller's environment named
from tunelab.tracking.mlflow_run import stage_run
params = {"tracking": {"uri": sys.argv[1], "experiment": "dying", "enabled": True, "lock_timeout": 60}}
with stage_run("train", params, sections=("tracking",)) as staged:
    staged.write_metrics("metrics.json", {"loss": 1.0})
    os.killpg(int(sys.argv[2]), signal.SIGKILL)  # the server and its workers die mid-stage
    started = time.monotonic()
    staged.log_metrics({"loss": 0.5}, step=1)
    staged.log_metrics({"loss": 0.25}, step=2)
print(json.dumps({"waited_s": time.monotonic() - started}))
"""


def test_a_server_that_dies_mid_stage_leaves_the_stage_finished_untracked_within_seconds(tmp_path):
    port = free_port()
    server = subprocess.Popen([sys.executable, "-m", "mlflow", "server", "--backend-store-uri",
                               f"sqlite:///{tmp_path / 'mlflow.db'}", "--host", "127.0.0.1", "--port", str(port)],
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    try:
        wait_healthy(f"http://127.0.0.1:{port}", server)
        env = {k: v for k, v in os.environ.items() if not k.startswith("MLFLOW_HTTP_REQUEST_")}
        done = subprocess.run([sys.executable, "-c", DYING_STAGE, f"http://127.0.0.1:{port}", str(server.pid)],
                              cwd=tmp_path, capture_output=True, text=True, timeout=300, env=env)
    finally:
        if server.poll() is None:
            os.killpg(server.pid, signal.SIGKILL)
        server.wait()
    assert done.returncode == 0, done.stderr[-2000:]
    assert json.loads(done.stdout.strip().splitlines()[-1])["waited_s"] < 60  # not MLflow's ~4 minutes of retries
    metrics = json.loads((tmp_path / "metrics.json").read_text())
    assert metrics["loss"] == 1.0 and metrics["tracking"].startswith("incomplete: ")
    assert done.stderr.count("warning: MLflow tracking failed") == 1
