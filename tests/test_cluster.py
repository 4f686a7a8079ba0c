"""Sweeps on a Ray cluster: two real Ray nodes on this machine, each trial a DVC experiment in its
own clone that pulls from and pushes to the team's remote; bad cluster input is one line."""

import json
import os
import socket
import sys
from pathlib import Path

import pytest
from pipeline_project import STAGES, run
from test_team import share

from tunelab.errors import TunelabError
from tunelab.sweeps import ray_cluster


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def ray_env(project: Path) -> dict:
    """What a node's processes inherit: this environment's tools first, a git identity for DVC's commits."""
    return {**os.environ, "PATH": f"{Path(sys.executable).parent}:{os.environ['PATH']}", "RAY_USAGE_STATS_ENABLED": "0",
            "GIT_AUTHOR_NAME": "t", "GIT_AUTHOR_EMAIL": "t@t", "GIT_COMMITTER_NAME": "t", "GIT_COMMITTER_EMAIL": "t@t",
            "DVC_NO_ANALYTICS": "1"}


@pytest.mark.slow
def test_a_sweep_and_a_search_on_a_two_node_ray_cluster_run_a_trial_on_each_and_restore_what_ran_before(
        baseline_copy, tmp_path):
    import mlflow

    project = baseline_copy
    share(project, tmp_path)
    run(project, "tunelab", "push")  # the baseline's outputs and run cache: what trials restore instead of running
    with ray_cluster.local_cluster(nodes=2, num_cpus=1, env=ray_env(project)) as address:
        # margin 0.02 is the baseline's own configuration (no stage runs); 0.05 reruns the report only
        swept = run(project, "tunelab", "-m", "eval.recommend.margin=0.02,0.05", "--executor", "ray", "--name", "onray",
                    f"cluster.address={address}", f"cluster.workdir={tmp_path / 'trials'}")
        # a search's trials on the same cluster: the stages up to train, the study in the driver's sqlite file
        run(project, "tunelab", "tune", "train.learning_rate=choice(0.01,1e-8)", "--trials", "2", "--jobs", "2",
            "--executor", "ray", "--name", "tuneray", f"cluster.address={address}", f"cluster.workdir={tmp_path / 'trials'}")
    searched = json.loads((project / "sweeps/tuneray/tune.json").read_text())
    assert [t["state"] for t in searched["trials"]] == ["COMPLETE", "COMPLETE"]  # two at once: no median to prune by
    assert all(t["value"] > 0 for t in searched["trials"]) and searched["best"] in {t["name"] for t in searched["trials"]}
    ran = json.loads((project / "sweeps/tuneray/trials.json").read_text())
    assert set(ran) == {"tuneray-1", "tuneray-2"} and {t["status"] for t in ran.values()} == {"Success"}
    trials = json.loads((project / "sweeps/onray/trials.json").read_text())
    assert {t["status"] for t in trials.values()} == {"Success"}
    assert len({t["node"].split(":")[1] for t in trials.values()}) == 2  # one trial on each node
    results = json.loads((project / "sweeps/onray/results.json").read_text())
    counts = {r["name"]: r["stages"] for r in results["runs"]}
    assert counts["onray-1"]["executed"] == 0  # every stage restored from the remote: the baseline ran them
    assert counts["onray-2"]["executed"] == 1  # the report, whose margin changed
    for stages in counts.values():
        assert stages["executed"] + stages["skipped"] + stages["restored"] == len(STAGES)
    baseline_figures = json.loads((project / "metrics/eval.json").read_text())
    assert [r["metrics"] for r in results["runs"]] == [baseline_figures, baseline_figures]  # pulled back by the driver
    report = (project / "sweeps/onray/report.md").read_text()
    assert "| onray-1 |" in report and "| onray-2 |" in report
    assert "onray-1 Success on" in swept.stderr + swept.stdout

    client = mlflow.MlflowClient(tracking_uri=f"sqlite:///{project / 'mlflow.db'}")
    experiment = client.get_experiment_by_name("tunelab").experiment_id
    [sweep] = client.search_runs([experiment], "tags.`tunelab.sweep` = 'onray'")
    children = client.search_runs([experiment], f"tags.`mlflow.parentRunId` = '{sweep.info.run_id}'")
    assert sorted(r.info.run_name for r in children) == ["onray-1", "onray-2"]
    [rerun] = [r for r in children if r.info.run_name == "onray-2"]
    stages = client.search_runs([experiment], f"tags.`mlflow.parentRunId` = '{rerun.info.run_id}'")
    assert [r.data.tags["tunelab.stage"] for r in stages] == ["report"]  # logged from the trial's clone


def test_a_trial_whose_pipeline_fails_is_reported_with_its_log_not_raised(tmp_path):
    share_ = ray_cluster.Share(git_url=str(tmp_path / "no-such-repo"), commit="0" * 40, dvc_remote=str(tmp_path))
    result = ray_cluster.run_trial(share_, "t-1", ["train.max_steps=1"], str(tmp_path / "trials"), threads=1)
    assert result.status == "Failed"
    assert "clone failed" in result.log and "no-such-repo" in result.log
    assert set(result.seconds) == {"clone"}  # nothing after the failed step ran


def test_a_ray_address_that_does_not_answer_is_one_line():
    port = free_port()
    with pytest.raises(TunelabError, match=rf"cluster.address 127.0.0.1:{port}: no Ray cluster answers there"):
        ray_cluster.ray_address(f"127.0.0.1:{port}")


@pytest.mark.slow
@pytest.mark.parametrize("arguments, message", [
    (["cluster.address=127.0.0.1:9"], "cluster.address 127.0.0.1:9: no Ray cluster answers there"),
    (["cluster.num_cpus=0"], "cluster: num_cpus > 0"),
    (["cluster.adress=x"], "cluster.adress"),
])
def test_bad_cluster_input_is_one_line_before_any_trial(baseline_copy, tmp_path, arguments, message):
    project = baseline_copy
    share(project, tmp_path)
    result = run(project, "tunelab", "-m", "eval.recommend.margin=0.02,0.05", "--executor", "ray", *arguments,
                 check=False)
    assert result.returncode == 2
    assert message in result.stderr and len(result.stderr.strip().splitlines()) == 1
    assert not (project / "sweeps").exists()  # nothing planned


def test_cluster_keys_without_the_ray_executor_are_refused(baseline_copy):
    result = run(baseline_copy, "tunelab", "-m", "eval.recommend.margin=0.02,0.05", "cluster.num_cpus=2", check=False)
    assert result.returncode == 2 and "configures --executor ray only" in result.stderr
