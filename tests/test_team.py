"""A team shares one DVC remote: a teammate's clone of the same commit restores every stage from it
instead of running it, with byte-identical metrics; a remote that lacks an output says so in one line."""

import json
import shutil
import socket
import subprocess
import sys
import time

import pytest
from pipeline_project import ran_stages, run

BUCKET = "tunelab-team"
S3_CREDENTIALS = {"AWS_ACCESS_KEY_ID": "team-key", "AWS_SECRET_ACCESS_KEY": "team-secret-value",
                  "AWS_DEFAULT_REGION": "us-east-1"}


@pytest.fixture(scope="module")
def s3_endpoint(tmp_path_factory):
    """An S3-compatible endpoint on loopback: moto's server (no object store can run here), with an
    empty bucket; stopped after the module."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    log = open(tmp_path_factory.mktemp("moto") / "server.log", "w")
    server = subprocess.Popen([sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(port)], stdout=log,
                              stderr=subprocess.STDOUT)
    endpoint = f"http://127.0.0.1:{port}"
    try:
        import boto3

        s3 = boto3.client("s3", endpoint_url=endpoint, **{k.lower(): v for k, v in S3_CREDENTIALS.items()
                                                          if k != "AWS_DEFAULT_REGION"}, region_name="us-east-1")
        for _ in range(100):
            try:
                s3.create_bucket(Bucket=BUCKET)
                break
            except Exception:  # noqa: BLE001 - not listening yet
                time.sleep(0.2)
        yield endpoint, s3
    finally:
        server.terminate()
        server.wait(timeout=30)
        log.close()


def add_remote(project, kind: str, tmp_path, s3_endpoint) -> None:
    """The team's remote, named in .dvc/config: a shared folder, or an S3 bucket whose endpoint DVC's
    config holds and whose credentials come from the environment (never from git or params.yaml)."""
    if kind == "directory":
        run(project, "dvc", "remote", "add", "--default", "team", str(tmp_path / "storage"))
    else:
        run(project, "dvc", "remote", "add", "--default", "team", f"s3://{BUCKET}/{tmp_path.name}")
        run(project, "dvc", "remote", "modify", "team", "endpointurl", s3_endpoint[0])


def share(project, tmp_path, kind: str = "directory", s3_endpoint=None) -> tuple:
    """The baseline copy as clone A: the team's remote named in .dvc/config and committed, the
    commit pushed to a bare git origin."""
    storage, origin = tmp_path / "storage", tmp_path / "origin.git"
    add_remote(project, kind, tmp_path, s3_endpoint)
    run(project, "git", "add", ".dvc/config")
    run(project, "git", "commit", "-qm", "share results through the team's DVC remote")
    subprocess.run(["git", "init", "-q", "--bare", str(origin)], check=True)
    run(project, "git", "remote", "add", "origin", str(origin))
    run(project, "git", "push", "-q", "origin", "HEAD:refs/heads/main")
    return storage, origin


@pytest.mark.slow
@pytest.mark.parametrize("kind", ["directory", "s3"])
def test_a_teammates_clone_restores_every_stage_from_the_remote_and_runs_none(kind, baseline_copy, tmp_path, request):
    project = baseline_copy
    endpoint = request.getfixturevalue("s3_endpoint") if kind == "s3" else None
    storage, origin = share(project, tmp_path, kind, endpoint)
    env = S3_CREDENTIALS if kind == "s3" else {}
    pushed = run(project, "tunelab", "push", env=env)
    assert "files pushed to DVC remote 'team'" in pushed.stdout and "with DVC's run cache" in pushed.stdout
    assert S3_CREDENTIALS["AWS_SECRET_ACCESS_KEY"] not in pushed.stdout + pushed.stderr
    if kind == "directory":
        assert any((storage / "runs").rglob("*"))  # the run cache went too
    else:
        listed = endpoint[1].list_objects_v2(Bucket=BUCKET, Prefix=f"{tmp_path.name}/runs/")
        assert listed["KeyCount"] > 0
        assert "team-secret-value" not in (project / ".dvc/config").read_text() + (project / "params.yaml").read_text()

    teammate = tmp_path / "b"
    subprocess.run(["git", "clone", "-q", "-b", "main", str(origin), str(teammate)], check=True)
    assert not (teammate / "models/trained").exists() and not (teammate / "data/predictions/trained").exists()
    restored = run(teammate, "dvc", "exp", "run", "--pull", env=env)  # what `make run` runs when a remote is set
    assert ran_stages(restored) == []  # every pipeline stage restored (check validates every run, by design)
    for metrics in ("metrics/eval.json", "metrics/train.json", "metrics/report.md"):
        assert (teammate / metrics).read_bytes() == (project / metrics).read_bytes()
    assert (teammate / "models/trained").is_dir()


@pytest.mark.slow
def test_a_remote_that_lacks_an_output_says_which_in_one_line_and_writes_nothing(baseline_copy, tmp_path):
    project = baseline_copy
    storage, origin = share(project, tmp_path)
    teammate = tmp_path / "b"
    subprocess.run(["git", "clone", "-q", "-b", "main", str(origin), str(teammate)], check=True)
    nothing = run(teammate, "tunelab", "pull", check=False)  # never pushed: the remote folder does not even exist
    assert nothing.returncode == 2
    [line] = nothing.stderr.strip().splitlines()
    assert line.startswith(f"error: DVC remote 'team' ({storage}) lacks ") and "models/trained" in line
    assert "`tunelab push`" in line and not (teammate / "models/trained").exists()

    run(project, "tunelab", "push")
    shutil.rmtree(next(storage.glob("files/md5")))  # the objects are gone, the remote is still there
    partial = run(teammate, "tunelab", "pull", check=False)
    assert partial.returncode == 2 and len(partial.stderr.strip().splitlines()) == 1 and "lacks" in partial.stderr

    unset = run(teammate, "tunelab", "push", "elsewhere", check=False)
    assert unset.returncode == 2
    assert unset.stderr.strip() == ("error: DVC remote 'elsewhere' is not configured (.dvc/config has ['team']): name "
                                    "one with `dvc remote add -d team URL` (a shared folder, s3://bucket/path, "
                                    "ssh://host/path) and commit .dvc/config; credentials go in `dvc remote modify "
                                    "--local` or the environment, never in git")


@pytest.mark.parametrize(("url", "message"), [
    ("fiel:///mnt/cache", "error: DVC remote 'team' URL 'fiel:///mnt/cache': unknown scheme 'fiel'; expected a folder or one"),
    ("s3:///cache", "error: DVC remote 'team' URL 's3:///cache': no host or bucket; expected s3://HOST_OR_BUCKET/PATH"),
])
def test_a_mistyped_remote_url_is_one_line_before_anything_moves(url, message, tmp_path):
    subprocess.run(["git", "init", "-q", str(tmp_path)], check=True)
    run(tmp_path, "dvc", "init", "-q")
    run(tmp_path, "dvc", "remote", "add", "-d", "team", url)  # DVC takes any string
    for command in ("push", "pull"):
        refused = run(tmp_path, "tunelab", command, check=False)
        assert refused.returncode == 2 and len(refused.stderr.strip().splitlines()) == 1
        assert refused.stderr.startswith(message)


def test_a_remote_url_is_shown_without_its_password():
    from tunelab.secrets import shown

    assert shown("https://user:s3cret@dvc.example.com:8443/cache") == "https://user:***@dvc.example.com:8443/cache"
    assert shown("/mnt/shared/cache") == "/mnt/shared/cache"
    assert shown("s3://bucket/path") == "s3://bucket/path"


@pytest.mark.slow
def test_a_sweep_is_shared_as_experiments_and_its_report_rebuilt_from_them(baseline_copy, tmp_path):
    project = baseline_copy
    storage, origin = share(project, tmp_path)  # the remote named (and committed) before the sweep, as README says
    run(project, "tunelab", "push")
    # the baseline's own configuration (every stage cached) and another margin (only the report reruns)
    run(project, "tunelab", "-m", "eval.recommend.margin=0.02,0.05", "--name", "shared")
    names = ["shared-1", "shared-2"]
    run(project, "dvc", "exp", "push", "origin", *names)  # the experiments to git, their data to the team's remote
    teammate = tmp_path / "b"
    subprocess.run(["git", "clone", "-q", "-b", "main", str(origin), str(teammate)], check=True)
    run(teammate, "dvc", "exp", "pull", "origin", *names)
    rebuilt = run(teammate, "tunelab", "--report", "shared")
    assert "rebuilt from 2 pulled experiments" in rebuilt.stdout
    mine = json.loads((project / "sweeps/shared/results.json").read_text())
    theirs = json.loads((teammate / "sweeps/shared/results.json").read_text())
    assert [(r["name"], r["metrics"]) for r in theirs["runs"]] == [(r["name"], r["metrics"]) for r in mine["runs"]]
    assert [r["overrides"] for r in theirs["runs"]] == [[], ["eval.recommend.margin=0.05"]]  # what differs, key by key
    assert theirs["recommended"] == mine["recommended"] and mine["recommended"]  # the predictions came along


def test_the_champion_moves_only_when_the_reports_rule_prefers_the_new_version(tmp_path):
    import mlflow

    from tunelab.config.schema import RecommendConfig
    from tunelab.team.model_registry import CHAMPION, SPLIT_TAG, move_champion

    client = mlflow.MlflowClient(tracking_uri=f"sqlite:///{tmp_path / 'mlflow.db'}")
    experiment = client.create_experiment("registry", artifact_location=(tmp_path / "artifacts").as_uri())
    client.create_registered_model("sentiment")
    ids = [f"r{i}" for i in range(2000)]

    def version(right: int, latency: float, split: str = "test-1"):
        """A registered version whose row scored ``right`` of 2,000 test rows at ``latency`` ms per token."""
        run_id = client.create_run(experiment).info.run_id
        row = {"variant": "merged", "prompting": "zero_shot", "scoring": "choice", "metric": "accuracy",
               "score": right / 2000, "examples": 2000, "train_seconds": 300.0, "token_latency_p50_ms": latency,
               "size_mb": 500.0}
        scores = {i: float(n < right) for n, i in enumerate(ids)}
        (tmp_path / "row.json").write_text(json.dumps({"row": row, "scores": scores}))
        client.log_artifact(run_id, str(tmp_path / "row.json"))
        made = client.create_model_version("sentiment", f"runs:/{run_id}/model", run_id,
                                           tags={SPLIT_TAG: split, "run_id": run_id})
        return client.get_model_version("sentiment", made.version)

    rule = RecommendConfig(margin=0.02, level=0.05)
    first = version(1800, 50.0)
    assert move_champion(client, "sentiment", first, rule) == f"now {CHAMPION} (there was none)"
    faster_same = version(1795, 30.0)  # 0.25 points lower on 2,000 rows, faster: non-inferior and cheaper
    assert move_champion(client, "sentiment", faster_same, rule).startswith(f"now {CHAMPION} (was version 1)")
    faster_worse = version(1600, 20.0)  # ten points lower: the rule keeps the better one
    assert move_champion(client, "sentiment", faster_worse, rule) == \
        f"{CHAMPION} stays version 2: the report's rule prefers it to this one"
    elsewhere = version(1900, 10.0, split="test-2")
    assert "another test split" in move_champion(client, "sentiment", elsewhere, rule)
    assert str(client.get_model_version_by_alias("sentiment", CHAMPION).version) == "2"
