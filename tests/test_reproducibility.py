"""The same config and seed give the same data, models and metrics, bitwise, on the CPU.

Everything DVC caches (data, models, predictions) is compared by its dvc.lock hash; metrics are
compared whole except the wall-clock measurements (times, speeds, memory), which no seed fixes,
and the tracking status (whether the MLflow run was logged): the rerun logs none, as MLflow's
start is ~2.5 s of each of its 21 stage processes and the baseline already proved the tracking.
"""

import json
import re

import pytest
import yaml
from pipeline_project import run

MEASURED = re.compile(r"seconds|per_second|latency|ttft|mfu|gflops|memory_mb|rss_mb")


def without_measurements(value):
    if isinstance(value, dict):
        return {k: without_measurements(v) for k, v in value.items() if not MEASURED.search(k) and k != "tracking"}
    if isinstance(value, list):
        return [without_measurements(v) for v in value]
    return value


def results(project) -> tuple[dict, dict]:
    """(hash of every cached output, every metrics file without its wall-clock figures and tracking
    status: those in metrics/ and the stages' own under data/, e.g. data/prepared/stats.json)."""
    lock = yaml.safe_load((project / "dvc.lock").read_text())["stages"]
    outputs = [out["path"] for entry in lock.values() for out in entry.get("outs", [])]
    cached = {out["path"]: out["md5"] for entry in lock.values() for out in entry.get("outs", [])
              if out["path"].startswith(("data/", "models/")) and not out["path"].endswith(".json")}
    files = [*sorted((project / "metrics").rglob("*.json")),
             *(project / path for path in outputs if path.startswith("data/") and path.endswith(".json"))]
    metrics = {str(path.relative_to(project)): without_measurements(json.loads(path.read_text()))
               for path in files if path.name != "bench.json"}
    return cached, metrics


def test_measurements_are_what_is_left_out():
    assert without_measurements({"accuracy": 0.5, "train_seconds": 3.0, "ttft_ms": 1, "tracking": "complete",
                                 "variants": [{"tokens_per_second": {"1": 2.0}, "size_mb": 1.0}]}) == \
        {"accuracy": 0.5, "variants": [{"size_mb": 1.0}]}


@pytest.mark.slow
@pytest.mark.reruns_stages
def test_the_same_config_and_seed_reproduce_every_output_bitwise(baseline, baseline_copy):
    """The committed baseline against every stage run again on a copy of it."""
    project = baseline_copy
    first_outputs, first_metrics = results(baseline.repo)
    assert {"models/trained", "models/deploy", "data/formatted/train.jsonl", "data/predictions/trained"} <= set(first_outputs)
    assert {"metrics/eval/trained.json", "metrics/train.json", "data/prepared/stats.json"} <= set(first_metrics)

    # every stage again, each in a new process (untracked: see the module's docstring)
    rerun = run(project, "dvc", "exp", "run", "--force", "-S", "tracking.enabled=false")
    assert "Running stage 'train'" in rerun.stdout
    assert json.loads((project / "metrics/train.json").read_text())["tracking"] == "disabled"
    second_outputs, second_metrics = results(project)
    assert second_outputs == first_outputs
    assert second_metrics == first_metrics
