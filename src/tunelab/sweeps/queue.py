"""The DVC experiments queue: one queued experiment per sweep run, workers, waiting, logs.

Queued experiments run in copies of the repository under ``.dvc/tmp/exps/`` that start from
the baseline commit's dvc.lock, so stages whose inputs a run does not change are skipped, and
a stage another run already executed with the same inputs is restored from DVC's run cache.
"""

import glob
import itertools
import json
import os
import re
import subprocess
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from tunelab.errors import TunelabError

DONE = ("Success", "Failed")
ALWAYS_CHANGED = "always changed"  # dvc status of a stage that runs every time by design (the check stage)
WHAT_DVC_DID = {  # the lines `dvc exp run` prints per stage; a later line about a stage overrides an earlier one
    "skipped": re.compile(r"Stage '([^']+)' didn't change, skipping"),
    "pulled": re.compile(r"Pulling data for stage: '([^']+)'"),  # --pull: unchanged, its outputs from the remote
    "restored": re.compile(r"Stage '([^']+)' is cached - skipping run"),  # run cache: same command, deps, params
    "executed": re.compile(r"Running stage '([^']+)'"),
}
NAMES_A_STAGE = re.compile(r"\b[Ss]tage\b[^']*'[^']+'")
"""Any line of DVC's that names a stage: one that none of WHAT_DVC_DID reads means its wording changed."""


@dataclass(frozen=True)
class StageCounts:
    """What one experiment's log says DVC did with each stage."""

    executed: int
    skipped: int
    restored: int

    @property
    def saved(self) -> int:
        return self.skipped + self.restored


def dvc(*args: str, env: dict | None = None) -> str:
    """Run a dvc command and return its standard output.

    The output goes through files, not pipes: `dvc queue start` leaves worker daemons holding
    its stdout and stderr, and reading a pipe would wait until the whole queue has run."""
    with tempfile.TemporaryFile("w+") as out, tempfile.TemporaryFile("w+") as err:
        result = subprocess.run(["dvc", *args], stdout=out, stderr=err, text=True, env=env)
        out.seek(0), err.seek(0)
        stdout, stderr = out.read(), err.read()
    if result.returncode != 0:
        raise TunelabError(f"dvc {' '.join(args)} failed: {(stderr or stdout).strip()[-2000:]}")
    return stdout


def existing_experiments() -> set[str]:
    """Names of the experiments in this repository (refs/exps/.../<name>)."""
    result = subprocess.run(["git", "for-each-ref", "--format=%(refname)", "refs/exps"], capture_output=True, text=True)
    return {ref.rsplit("/", 1)[-1] for ref in result.stdout.split()}


def changed_stages() -> list[str]:
    """Stages of the workspace pipeline that are not up to date: every sweep run would redo them.
    (Not the stages that run every time by design: caching could never save those.)"""
    result = subprocess.run(["dvc", "status", "--json"], capture_output=True, text=True)
    status = json.loads(result.stdout or "{}") if result.returncode == 0 else {}
    return sorted(name for name, changes in status.items() if changes != [ALWAYS_CHANGED])


def queue(name: str, overrides: list[str], targets: tuple[str, ...] = ()) -> None:
    """Queue one experiment called ``name`` with ``-S`` overrides (composed from conf/ by DVC), of the
    whole pipeline or of ``targets`` and the stages they need."""
    dvc("exp", "run", "--queue", "--name", name, *[arg for o in overrides for arg in ("-S", o)], *targets)


def visible_gpus() -> list[str]:
    """The GPUs this process may use: CUDA_VISIBLE_DEVICES where it is set, else each one torch sees
    (torch is imported only where an NVIDIA device node exists: the sweep's driver does not need it)."""
    if (visible := os.environ.get("CUDA_VISIBLE_DEVICES")) is not None:
        return list(itertools.takewhile(lambda gpu: gpu not in ("", "-1"), (gpu.strip() for gpu in visible.split(","))))
    if not glob.glob("/dev/nvidia[0-9]*"):
        return []
    import torch

    return [str(index) for index in range(torch.cuda.device_count())]


def start_workers(jobs: int, gpus: list[str] | None = None) -> None:
    """Start ``jobs`` queue workers; each stage in them gets an equal share of the CPU cores and, where
    there are GPUs (``gpus``, else the visible ones), worker k gets GPU k mod their number, alone in its
    CUDA_VISIBLE_DEVICES. DVC gives every worker of one `dvc queue start` its caller's environment, and
    starts only the worker numbers not running yet: so worker k is started by `--jobs k` with its GPU,
    once worker k-1 answers."""
    env = dict(os.environ)
    env.setdefault("OMP_NUM_THREADS", str(max(1, (os.cpu_count() or 1) // jobs)))
    gpus = visible_gpus() if gpus is None else gpus
    if not gpus:
        dvc("queue", "start", "--jobs", str(jobs), env=env)
        return
    for number in range(1, jobs + 1):
        gpu = gpus[(number - 1) % len(gpus)]
        dvc("queue", "start", "--jobs", str(number), env={**env, "CUDA_VISIBLE_DEVICES": gpu})
        wait_for_worker(number)
        print(f"queue worker {number}: GPU {gpu}")


def wait_for_worker(number: int, timeout: float = 120.0, root: Path = Path(".")) -> None:
    """Until this repository's queue worker ``number`` answers DVC's status query."""
    from dvc.repo import Repo

    deadline = time.monotonic() + timeout
    with Repo(str(root)) as repo:
        while not any(node.endswith(f"-{number}@localhost") for node in repo.experiments.celery_queue.worker_status()):
            if time.monotonic() > deadline:
                raise TunelabError(f"dvc queue worker {number} did not start within {timeout:.0f} s: see .dvc/tmp/exps/celery")
            time.sleep(1)


def queue_status(root: Path = Path(".")) -> dict[str, str]:
    """``{experiment name: Queued | Running | Success | Failed}``, from the records ``dvc queue
    status`` prints (DVC's Python API: the command has no machine-readable output, and its table's
    layout is not an interface). A fresh Repo per call: the queue changes between polls."""
    from dvc.repo import Repo

    with Repo(str(root)) as repo:
        return {task["name"]: task["status"] for task in repo.experiments.celery_queue.status() if task.get("name")}


MISSING_POLLS = 3
"""Polls in a row an experiment must be absent from ``dvc queue status`` to count as removed: the
status can miss a task for one poll while a worker picks it up."""
STALLED_POLLS = 3
"""Polls in a row an experiment must be "Running" with no live queue worker to count as lost: DVC's
temporary worker can stop itself mid-run (dvc-task's monitor takes a status query the busy worker
answers late for an empty queue), and nothing would then ever end that run."""


def live_workers(root: Path = Path(".")) -> int:
    """This repository's queue workers whose process runs, from the records DVC keeps of them
    (``.dvc/tmp/exps/celery/dvc-exp-worker-N.json``): files, which a busy worker cannot answer late."""
    alive = 0
    for record in (root / ".dvc/tmp/exps/celery").glob("dvc-exp-worker-*.json"):
        info = json.loads(record.read_text() or "{}")
        try:
            os.kill(info["pid"], 0)
        except (KeyError, ProcessLookupError, PermissionError):  # gone (or its number is another user's now)
            continue
        alive += info.get("returncode") is None
    return alive


def wait(names: list[str], on_done: Callable[[str, str], None], poll_seconds: float = 10.0,
         statuses: Callable[[], dict[str, str]] = queue_status, workers: Callable[[], int] = live_workers
         ) -> dict[str, str]:
    """Poll the queue until every experiment in ``names`` ended; ``on_done(name, status)`` as each does."""
    finished: dict[str, str] = {}
    missing = dict.fromkeys(names, 0)
    stalled = 0
    while len(finished) < len(names):
        current = statuses()
        running = [name for name in names if name not in finished and current.get(name) == "Running"]
        stalled = stalled + 1 if running and workers() == 0 else 0
        for name in names:
            status = current.get(name)
            missing[name] = missing[name] + 1 if status is None else 0
            if name not in finished and status in DONE:
                finished[name] = status
                on_done(name, status)
            elif name not in finished and missing[name] >= MISSING_POLLS:
                finished[name] = "Failed"
                on_done(name, "Failed")  # removed from the queue (dvc queue remove/kill)
            elif name in running and stalled >= STALLED_POLLS:
                print(f"{name}: DVC's queue says it is running, but no queue worker is left (one stopped "
                      "mid-run): counted as failed; run the sweep again to retry it (finished runs are cached)")
                finished[name] = "Failed"
                on_done(name, "Failed")
        if len(finished) < len(names):
            time.sleep(poll_seconds)
    return finished


def logs(name: str) -> str:
    return dvc("queue", "logs", name)


def always_changed_stages(pipeline: Path = Path("dvc.yaml")) -> set[str]:
    """Stages dvc.yaml runs every time by design (``always_changed``: the check stage)."""
    import yaml

    stages = (yaml.safe_load(pipeline.read_text()) or {}).get("stages", {}) if pipeline.is_file() else {}
    return {name for name, stage in stages.items() if stage.get("always_changed")}


def stage_counts(log: str) -> StageCounts | None:
    """Stages executed, skipped and restored; the always_changed ones are not counted, since no
    caching could ever save them. DVC prints this nowhere machine-readable (neither ``dvc exp show
    --json`` nor its Python API records a run-cache restore), so its log is read, and where it names
    a stage in words none of WHAT_DVC_DID reads, or names none, the counts are unknown (None)."""
    always_run = always_changed_stages()
    outcome: dict[str, str] = {}
    for line in log.splitlines():
        read = [(what, found[1]) for what, pattern in WHAT_DVC_DID.items() if (found := pattern.search(line))]
        if not read and NAMES_A_STAGE.search(line):
            return None
        for what, stage in read:
            if stage not in always_run:
                outcome[stage] = what
    if not outcome:
        return None
    counted = list(outcome.values())
    return StageCounts(executed=counted.count("executed"), skipped=counted.count("skipped") + counted.count("pulled"),
                       restored=counted.count("restored"))
