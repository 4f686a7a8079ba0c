"""MLflow runs for stages: a sweep parent (optional) → one run per pipeline configuration → one
child run per stage.

Each DVC stage is its own process, so the stages of one pipeline find their parent by a tag:
the hash of the composed params. Re-running the same configuration adds stage runs under the
same parent; a new configuration (a sweep point, an edit in conf/) gets a new parent. With
``tracking.sweep`` set (``tunelab -m`` sets it), pipeline runs nest under the sweep's run.

Queued experiments run in a copy of the repository under ``.dvc/tmp/exps/``; DVC tells their
stages the real root in ``DVC_ROOT``, and a relative store (the default ``sqlite:///mlflow.db``)
is resolved against it, so every experiment logs to the one store the workspace uses.
"""

import fcntl
import hashlib
import json
import os
import sqlite3
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import closing, contextmanager
from pathlib import Path

from tunelab.config.load import to_section
from tunelab.config.schema import TrackingConfig
from tunelab.io.atomic import write_json
from tunelab.secrets import redacted, scrubbed
from tunelab.tracking.lineage import experiment_tags, git_commit, lineage_tags, pip_freeze, stage_input_hashes

PIPELINE_TAG = "tunelab.pipeline"
STAGE_TAG = "tunelab.stage"
SWEEP_TAG = "tunelab.sweep"
PARENT_TAG = "mlflow.parentRunId"
MAX_PARAM_LENGTH = 6000  # MLflow rejects longer param values
CUT_MARK = " [cut: the whole value is in the run's params.yaml artifact]"
PARAMS_PER_BATCH = 100  # MLflow's limit per log_batch call
SQLITE = "sqlite:///"


def flatten(tree: dict, prefix: str = "") -> dict[str, str]:
    """``{"data": {"seed": 1}}`` → ``{"data.seed": "1"}``; values past MLflow's limit are cut."""
    flat = {}
    for key, value in tree.items():
        name = f"{prefix}{key}"
        if isinstance(value, dict):
            flat.update(flatten(value, f"{name}."))
        else:
            text = json.dumps(value) if isinstance(value, list) else str(value)
            flat[name] = text if len(text) <= MAX_PARAM_LENGTH else text[: MAX_PARAM_LENGTH - len(CUT_MARK)] + CUT_MARK
    return flat


def config_hash(params: dict) -> str:
    return hashlib.sha256(json.dumps(params, sort_keys=True).encode()).hexdigest()[:12]


def tracking_uri(configured: str) -> str:
    """MLFLOW_TRACKING_URI, else ``configured``, with a relative sqlite path made the repository's."""
    uri = os.environ.get("MLFLOW_TRACKING_URI") or configured
    root = Path(os.environ.get("DVC_ROOT") or ".").resolve()
    if uri.startswith(SQLITE) and not uri.startswith(SQLITE + "/"):
        return SQLITE + str(root / uri.removeprefix(SQLITE))
    return uri


@contextmanager
def store_lock(uri: str, timeout: float) -> Iterator[None]:
    """For a sqlite store: one process at a time creates the store and the experiment (two stages
    or queue workers opening a new store together would both create its tables), with the store
    in WAL mode, so readers (the UI, other stages) do not block its writers. A hold longer than
    ``timeout`` seconds (a stuck process) raises TimeoutError, and the stage goes on untracked."""
    if not uri.startswith(SQLITE):
        yield
        return
    database = Path(uri.removeprefix(SQLITE))
    database.parent.mkdir(parents=True, exist_ok=True)
    lock_path = database.with_name(database.name + ".lock")
    with open(lock_path, "w") as lock:
        hold_lock(lock, lock_path, timeout)
        try:
            with closing(sqlite3.connect(database, timeout=timeout)) as connection:
                connection.execute("PRAGMA journal_mode=WAL")  # kept by the file: once is enough
            yield
        finally:
            fcntl.flock(lock, fcntl.LOCK_UN)


def hold_lock(lock, lock_path: Path, timeout: float) -> None:
    """flock with a deadline: flock itself waits forever or not at all."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
            return
        except BlockingIOError:
            if time.monotonic() >= deadline:
                raise TimeoutError(f"{lock_path} was held by another process for {timeout:g} s "
                                   "(tracking.lock_timeout)") from None
            time.sleep(0.1)


CLIENT_SETTINGS = {"MLFLOW_HTTP_REQUEST_MAX_RETRIES": "2", "MLFLOW_HTTP_REQUEST_BACKOFF_FACTOR": "1",
                   "MLFLOW_HTTP_REQUEST_TIMEOUT": "30", "MLFLOW_SUPPRESS_PRINTING_URL_TO_STDOUT": "true"}
"""How long a stage waits for a tracking server that has gone: seconds, where MLflow's defaults
retry each request for about four minutes (tracking never holds up the work); and no "View run
at" lines from MLflow on a stage's stdout, amid DVC's. A value the user set wins."""


def open_experiment(tracking: TrackingConfig):
    """A client on the configured store and the experiment's id (created on first use).

    A new experiment on a local store keeps its artifacts in ``mlruns/`` beside the store, not
    under the current folder, which for a queued experiment is a temporary copy.
    """
    import mlflow

    uri = tracking_uri(tracking.uri)
    for variable, value in CLIENT_SETTINGS.items():
        os.environ.setdefault(variable, value)
    mlflow.set_tracking_uri(uri)
    with store_lock(uri, tracking.lock_timeout):
        client = mlflow.MlflowClient()
        experiment = client.get_experiment_by_name(tracking.experiment)
        if experiment is not None:
            return client, experiment.experiment_id
        location = (Path(uri.removeprefix(SQLITE)).parent / "mlruns").as_uri() if uri.startswith(SQLITE) else None
        return client, client.create_experiment(tracking.experiment, artifact_location=location)


def _log_params(client, run_id: str, params: dict[str, str]) -> None:
    from mlflow.entities import Param

    items = [Param(key, value) for key, value in params.items()]
    for start in range(0, len(items), PARAMS_PER_BATCH):
        client.log_batch(run_id, params=items[start : start + PARAMS_PER_BATCH])


def sweep_run_id(client, experiment_id: str, sweep: str, overrides: list[str] | None = None) -> str:
    """The parent run of the sweep called ``sweep``, created on first use."""
    found = client.search_runs([experiment_id], filter_string=f"tags.`{SWEEP_TAG}` = '{sweep}'", max_results=1)
    if found:
        return found[0].info.run_id
    tags = {SWEEP_TAG: sweep, **({"mlflow.source.git.commit": commit} if (commit := git_commit()) else {})}
    run = client.create_run(experiment_id, run_name=sweep, tags=tags)
    if overrides:
        client.log_param(run.info.run_id, "overrides", scrubbed(" ".join(overrides))[:MAX_PARAM_LENGTH])
    client.set_terminated(run.info.run_id)
    return run.info.run_id


def _pipeline_run_id(client, experiment_id: str, params: dict, sweep: str | None, name: str | None = None) -> str:
    """The parent run of this configuration, created with the flattened config on first use and
    named after its DVC experiment (``name``, else the one DVC runs the stage in).

    Search-then-create races when several workers share a tracking server: two workers that
    start the same configuration at once would both find nothing and both create a run. Within
    a sweep, the new run claims the configuration on the sweep's run with a param (MLflow params
    never change once logged, which the store enforces atomically): the loser of the claim deletes
    its run and takes the winner's."""
    key = config_hash(params)
    found = client.search_runs([experiment_id], filter_string=f"tags.`{PIPELINE_TAG}` = '{key}'", max_results=1)
    if found:
        return found[0].info.run_id
    tags = {PIPELINE_TAG: key, **experiment_tags()}
    if commit := git_commit():
        tags["mlflow.source.git.commit"] = commit
    sweep_id = sweep_run_id(client, experiment_id, sweep) if sweep else None
    if sweep_id:
        tags[PARENT_TAG] = sweep_id
    name = name or os.environ.get("DVC_EXP_NAME") or f"pipeline-{key[:8]}"
    run_id = client.create_run(experiment_id, run_name=name, tags=tags).info.run_id
    if sweep_id and (winner := claim(client, sweep_id, f"{CLAIM_PREFIX}{key}", run_id)) != run_id:
        client.delete_run(run_id)
        return winner
    _log_params(client, run_id, flatten(redacted(params)))
    client.log_dict(run_id, redacted(params), "params.yaml")
    client.set_terminated(run_id)
    return run_id


CLAIM_PREFIX = "tunelab.pipeline."


def claim(client, holder_id: str, key: str, value: str) -> str:
    """``value`` if this call logged param ``key`` on run ``holder_id`` first, else the value that
    was logged before it (MLflow refuses to change a logged param)."""
    from mlflow.exceptions import MlflowException

    try:
        client.log_param(holder_id, key, value)
        return value
    except MlflowException:
        logged = client.get_run(holder_id).data.params.get(key)
        if logged is None:
            raise
        return logged


def record_pipeline(client, experiment_id: str, params: dict, name: str, summary: dict[str, float],
                    outputs: dict[str, str]) -> str:
    """The pipeline run of DVC experiment ``name`` with ``summary`` and the hashes of its data and
    model ``outputs`` on it, unless its report stage logged them: its stages may all have been
    cached (a sweep point equal to the baseline), and then none of them ran to log anything."""
    run_id = _pipeline_run_id(client, experiment_id, params, params.get("tracking", {}).get("sweep"), name)
    if not set(summary) & set(client.get_run(run_id).data.metrics):
        tags = {**lineage_tags(outputs), "tunelab.figures": "from dvc exp show: no stage had to run"}
        _log_summary(client, run_id, summary, tags)
    return run_id


def _log_summary(client, run_id: str, metrics: dict[str, float], tags: dict[str, str]) -> None:
    from mlflow.entities import Metric, RunTag

    now = int(time.time() * 1000)
    client.log_batch(run_id, metrics=[Metric(k, float(v), now, 0) for k, v in metrics.items()],
                     tags=[RunTag(k, v) for k, v in tags.items()])


def _fail_abandoned(client, experiment_id: str, parent_id: str, stage: str) -> None:
    """A stage killed outright (SIGKILL, power loss) leaves its run RUNNING; its next run ends it."""
    filters = (f"tags.`{PARENT_TAG}` = '{parent_id}' and tags.`{STAGE_TAG}` = '{stage}' "
               "and attributes.status = 'RUNNING'")
    for run in client.search_runs([experiment_id], filter_string=filters):
        client.set_tag(run.info.run_id, "tunelab.abandoned", "its process died without closing the run")
        client.set_terminated(run.info.run_id, status="FAILED")


class StageRun:
    """What a stage logs to. Tracking never kills the work: the first MLflow failure (a locked
    store, a server that is down) is one warning, after which the stage goes on untracked and
    its metrics files say ``"tracking": "incomplete: ..."``. A no-op when tracking is disabled.
    """

    def __init__(self, run=None, client=None, pipeline_id: str | None = None, failure: str | None = None,
                 enabled: bool = True):
        self.run = run
        self.client = client
        self.pipeline_id = pipeline_id
        self.failure = failure
        self.enabled = enabled
        self._metrics_files: dict[Path, dict] = {}
        if failure:
            _warn(failure)

    def _safely(self, action: Callable[[], None]) -> None:
        if not self.run:
            return
        try:
            action()
        except Exception as error:  # noqa: BLE001 - any tracking failure is the same to the stage
            self.failure = scrubbed(f"{type(error).__name__}: {(str(error).splitlines() or [''])[0][:300]}")
            self.run = None
            _warn(self.failure)
            self._rewrite_metrics()

    def status(self) -> str:
        if not self.enabled:
            return "disabled"
        return f"incomplete: {self.failure}" if self.failure else "complete"

    def write_metrics(self, path: str | Path, metrics: dict) -> None:
        """The stage's metrics file with the tracking status; rewritten if tracking fails later."""
        self._metrics_files[Path(path)] = metrics
        write_json(path, {**metrics, "tracking": self.status()})

    def _rewrite_metrics(self) -> None:
        for path, metrics in self._metrics_files.items():
            write_json(path, {**metrics, "tracking": self.status()})

    def log_metrics(self, metrics: dict[str, float], step: int | None = None) -> None:
        self._safely(lambda: _mlflow().log_metrics({k: float(v) for k, v in metrics.items()}, step=step))

    def log_artifact(self, path: str | Path, folder: str | None = None) -> None:
        self._safely(lambda: _mlflow().log_artifact(str(path), artifact_path=folder))

    def set_tag(self, key: str, value: str) -> None:
        self._safely(lambda: _mlflow().set_tag(key, value))

    def log_artifacts(self, directory: str | Path, folder: str | None = None) -> None:
        self._safely(lambda: _mlflow().log_artifacts(str(directory), artifact_path=folder))

    def log_figure(self, figure, name: str) -> None:
        self._safely(lambda: _mlflow().log_figure(figure, name))

    def summarize_pipeline(self, metrics: dict[str, float], tags: dict[str, str]) -> None:
        """Put headline figures on the pipeline's run, where the runs table of a sweep shows them."""
        self._safely(lambda: _log_summary(self.client, self.pipeline_id, metrics, tags))

    def end(self, status: str) -> None:
        self._safely(lambda: _mlflow().end_run(status=status))


def _mlflow():
    """mlflow, imported only once a run is open: a stage with tracking off never pays its import."""
    import mlflow

    return mlflow


def _warn(failure: str) -> None:
    print(f"warning: MLflow tracking failed ({scrubbed(failure)}); the stage goes on without it, and its metrics "
          "say tracking is incomplete. Check tracking.uri / MLFLOW_TRACKING_URI (is the server up, the sqlite "
          "file writable?)", file=sys.stderr)


def _start_stage_run(stage: str, params: dict, tracking: TrackingConfig, sections: tuple[str, ...],
                     system_metrics: bool) -> StageRun:
    """The stage's child run, nested under its pipeline's run by the parent tag alone: the
    pipeline run is never resumed, so no crash or kill can leave it RUNNING."""
    import mlflow

    client, experiment_id = open_experiment(tracking)
    parent_id = _pipeline_run_id(client, experiment_id, params, tracking.sweep)
    _fail_abandoned(client, experiment_id, parent_id, stage)
    tags = {STAGE_TAG: stage, **experiment_tags(), **stage_input_hashes(stage)}
    if commit := git_commit():
        tags["mlflow.source.git.commit"] = commit
    run = mlflow.start_run(experiment_id=experiment_id, run_name=stage, parent_run_id=parent_id, tags=tags,
                           log_system_metrics=system_metrics)
    staged = StageRun(run, client, parent_id)
    logged = redacted({name: params.get(name) for name in sections})
    staged._safely(lambda: (mlflow.log_params(flatten(logged)), mlflow.log_dict(logged, "params.yaml"),
                            mlflow.log_text(pip_freeze(), "pip-freeze.txt")))
    return staged


@contextmanager
def stage_run(stage: str, params: dict, sections: tuple[str, ...], system_metrics: bool = False) -> Iterator[StageRun]:
    """Open the stage's child run under its pipeline's run; a crash marks it FAILED.

    The run is tagged with the git commit, the DVC experiment and the dvc.lock hashes of the
    data and models the stage reads, and carries its params (whole, as params.yaml) and the
    installed packages (pip-freeze.txt). ``system_metrics`` samples CPU, memory (and GPU
    utilisation/memory where CUDA and pynvml exist) while the stage works. When the store
    cannot be reached the stage runs untracked (see :class:`StageRun`).
    """
    tracking = to_section(TrackingConfig, "tracking", params.get("tracking", {}))
    if not tracking.enabled:
        yield StageRun(enabled=False)
        return
    try:
        run = _start_stage_run(stage, params, tracking, sections, system_metrics)
    except Exception as error:  # noqa: BLE001 - the store is unusable: work on without it
        run = StageRun(failure=scrubbed(f"{type(error).__name__}: {(str(error).splitlines() or [''])[0][:300]}"))
    try:
        yield run
    except BaseException:
        run.end("FAILED")
        raise
    run.end("FINISHED")
