"""MLflow runs for stages: one parent run per pipeline configuration, one child run per stage.

Each DVC stage is its own process, so the stages of one pipeline find their parent by a tag:
the hash of the composed params. Re-running the same configuration adds stage runs under the
same parent; a new configuration (a sweep point, an edit in conf/) gets a new parent.
"""

import hashlib
import json
import os
import subprocess
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from tunelab.config.load import to_section
from tunelab.config.schema import TrackingConfig

PIPELINE_TAG = "tunelab.pipeline"
STAGE_TAG = "tunelab.stage"
MAX_PARAM_LENGTH = 6000  # MLflow rejects longer param values
PARAMS_PER_BATCH = 100  # MLflow's limit per log_batch call


def flatten(tree: dict, prefix: str = "") -> dict[str, str]:
    """``{"data": {"seed": 1}}`` → ``{"data.seed": "1"}``, values cut to MLflow's limit."""
    flat = {}
    for key, value in tree.items():
        name = f"{prefix}{key}"
        if isinstance(value, dict):
            flat.update(flatten(value, f"{name}."))
        else:
            text = json.dumps(value) if isinstance(value, list) else str(value)
            flat[name] = text if len(text) <= MAX_PARAM_LENGTH else text[: MAX_PARAM_LENGTH - 3] + "..."
    return flat


def config_hash(params: dict) -> str:
    return hashlib.sha256(json.dumps(params, sort_keys=True).encode()).hexdigest()[:12]


def git_commit() -> str | None:
    result = subprocess.run(["git", "rev-parse", "HEAD"], capture_output=True, text=True)
    return result.stdout.strip() if result.returncode == 0 else None


class StageRun:
    """What a stage logs to; a no-op when tracking is disabled, so stages need no branches."""

    def __init__(self, run=None):
        self.run = run

    def log_metrics(self, metrics: dict[str, float], step: int | None = None) -> None:
        if self.run:
            import mlflow

            mlflow.log_metrics({k: float(v) for k, v in metrics.items()}, step=step)

    def log_artifact(self, path: str | Path, folder: str | None = None) -> None:
        if self.run:
            import mlflow

            mlflow.log_artifact(str(path), artifact_path=folder)

    def set_tag(self, key: str, value: str) -> None:
        if self.run:
            import mlflow

            mlflow.set_tag(key, value)

    def log_artifacts(self, directory: str | Path, folder: str | None = None) -> None:
        if self.run:
            import mlflow

            mlflow.log_artifacts(str(directory), artifact_path=folder)


def _log_params(client, run_id: str, params: dict[str, str]) -> None:
    from mlflow.entities import Param

    items = [Param(key, value) for key, value in params.items()]
    for start in range(0, len(items), PARAMS_PER_BATCH):
        client.log_batch(run_id, params=items[start : start + PARAMS_PER_BATCH])


def _pipeline_run_id(client, experiment_id: str, params: dict) -> str:
    """The parent run of this configuration, created with the flattened config on first use."""
    key = config_hash(params)
    found = client.search_runs([experiment_id], filter_string=f"tags.`{PIPELINE_TAG}` = '{key}'", max_results=1)
    if found:
        return found[0].info.run_id
    tags = {PIPELINE_TAG: key}
    if commit := git_commit():
        tags["mlflow.source.git.commit"] = commit
    run = client.create_run(experiment_id, run_name=f"pipeline-{key[:8]}", tags=tags)
    _log_params(client, run.info.run_id, flatten(params))
    client.set_terminated(run.info.run_id)
    return run.info.run_id


@contextmanager
def stage_run(stage: str, params: dict, sections: tuple[str, ...], system_metrics: bool = False) -> Iterator[StageRun]:
    """Open the stage's child run under its pipeline's parent; a crash marks it FAILED.

    ``system_metrics`` samples CPU, memory (and GPU utilisation/memory where CUDA and pynvml
    exist) into the run while the stage works.
    """
    tracking = to_section(TrackingConfig, "tracking", params.get("tracking", {}))
    if not tracking.enabled:
        yield StageRun()
        return
    import mlflow

    mlflow.set_tracking_uri(os.environ.get("MLFLOW_TRACKING_URI") or tracking.uri)
    experiment = mlflow.set_experiment(tracking.experiment)
    client = mlflow.MlflowClient()
    parent_id = _pipeline_run_id(client, experiment.experiment_id, params)
    with mlflow.start_run(run_id=parent_id):
        with mlflow.start_run(run_name=stage, nested=True, tags={STAGE_TAG: stage},
                              log_system_metrics=system_metrics) as run:
            mlflow.log_params(flatten({name: params.get(name) for name in sections}))
            yield StageRun(run)
