"""Sweeps on a Ray cluster (``tunelab -m ... --executor ray``): each combination one Ray task.

Ray schedules the trials, pins their devices (``num_gpus`` sets CUDA_VISIBLE_DEVICES) and reruns
one whose worker died; DVC runs and caches the pipeline; git and the DVC remote carry the work
between machines. No scheduler of our own. A trial, on whichever node Ray picks:

1. clones the sweep's commit into its own working copy (``cluster.workdir``/NAME; a retried trial
   finds it again, and its train stage resumes from the newest complete checkpoint there);
2. ``dvc exp run --pull`` with its overrides: every stage whose inputs it shares with a run pushed
   earlier (the baseline, a teammate's, an earlier sweep's) is restored from the remote's run cache;
3. ``dvc exp push --run-cache``: the experiment to the git repository the sweep came from, its
   outputs and run cache to the DVC remote.

The driver then ``dvc exp pull``s the experiments and writes the same report as a queued sweep.
"""

import logging
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

from tunelab.config.schema import ClusterConfig
from tunelab.errors import TunelabError

LOG_TAIL = 2000
"""Characters of a failed trial's log shown in the sweep's output."""


@dataclass(frozen=True)
class Share:
    """Where a trial gets the sweep's code and data, and where its results go."""

    git_url: str
    commit: str
    dvc_remote: str
    environment: dict[str, str] = field(default_factory=dict)  # the driver's settings every trial needs


@dataclass(frozen=True)
class TrialResult:
    name: str
    status: str  # Success or Failed, as the DVC queue says
    log: str  # what git and dvc printed: stage counts come from it, a failure shows its tail
    node: str
    seconds: dict[str, float]  # clone, run, push


def _git(*args: str, cwd: str | Path = ".") -> str:
    result = subprocess.run(["git", *args], cwd=cwd, capture_output=True, text=True)
    return result.stdout.strip() if result.returncode == 0 else ""


def share_of_this_repository(tracking_uri: str) -> Share:
    """The commit trials run and where they get it: ``origin`` where the commit is pushed there, else
    this repository's own folder (one machine, or a folder the nodes share). One line and no trial
    where a trial could not run the sweep as it was asked."""
    from tunelab.team.sharing import default_remote

    commit = _git("rev-parse", "HEAD")
    if not commit:
        raise TunelabError("--executor ray: not a git repository with a commit; trials clone the sweep's commit")
    if dirty := _git("status", "--porcelain", "--untracked-files=no", "--", ".", ":!params.yaml", ":!dvc.lock"):
        raise TunelabError(f"--executor ray: trials clone commit {commit[:8]}, so uncommitted changes would not run "
                           f"({dirty.splitlines()[0].strip()} ...): commit them first")
    if origin := _git("remote", "get-url", "origin"):
        if not _git("branch", "-r", "--contains", commit):
            raise TunelabError(f"--executor ray: commit {commit[:8]} is not on origin ({origin}): `git push` it first")
        git_url = origin
    else:
        git_url = str(Path(_git("rev-parse", "--show-toplevel")).resolve())
    _, remote_url = default_remote()
    return Share(git_url, commit, remote_url, {"MLFLOW_TRACKING_URI": tracking_uri})


def _checked(command: list[str], cwd: Path, env: dict, log: list[str]) -> None:
    result = subprocess.run(command, cwd=cwd, env=env, capture_output=True, text=True)
    log.append(f"$ {' '.join(command)}\n{result.stdout}{result.stderr}")
    if result.returncode != 0:
        raise TunelabError(f"{' '.join(command[:3])} exited with {result.returncode}")


def run_trial(share: Share, name: str, overrides: list[str], workdir: str, threads: int,
              targets: tuple[str, ...] = ()) -> TrialResult:
    """One combination as a DVC experiment in its own working copy: the body of the Ray task; the
    stages up to ``targets`` only, where given (a search's trial ends at train). A pipeline that fails
    is a Failed result with its log, never an exception: Ray retries only trials whose worker died."""
    copy = Path(workdir).expanduser() / name
    bin_dir = str(Path(sys.executable).parent)  # the node's tunelab environment: its dvc and python
    env = {**os.environ, **share.environment, "PATH": f"{bin_dir}:{os.environ.get('PATH', '')}",
           "OMP_NUM_THREADS": str(threads), "DVC_NO_ANALYTICS": "1"}
    dvc = f"{bin_dir}/dvc"
    steps = {
        "clone": [] if (copy / ".git").is_dir() else [
            ["git", "clone", "--quiet", "--no-checkout", share.git_url, "."],
            ["git", "checkout", "--quiet", "--detach", share.commit],
            [dvc, "remote", "add", "--local", "--force", "--default", "sweep", share.dvc_remote]],
        "run": [[dvc, "exp", "run", "--pull", "--name", name, *[arg for o in overrides for arg in ("-S", o)], *targets]],
        "push": [[dvc, "exp", "push", "--run-cache", share.git_url, name]],
    }
    log: list[str] = []
    seconds: dict[str, float] = {}
    status = "Success"
    copy.mkdir(parents=True, exist_ok=True)
    for step, commands in steps.items():
        started = time.perf_counter()
        try:
            for command in commands:
                _checked(command, copy, env, log)
        except TunelabError as error:
            log.append(f"trial {name}: {step} failed: {error}")
            status = "Failed"
            break
        finally:
            seconds[step] = round(time.perf_counter() - started, 2)
    return TrialResult(name, status, "\n".join(log), socket.gethostname() + ":" + _node_id(), seconds)


def _node_id() -> str:
    """Ray's id of the node this runs on; "local" outside a Ray worker (a test calls run_trial directly),
    where importing ray would set RAY_* variables that every process this one starts inherits."""
    ray = sys.modules.get("ray")  # a Ray worker has imported it
    return ray.get_runtime_context().get_node_id()[:12] if ray and ray.is_initialized() else "local"


def ray_address(configured: str) -> str:
    """The cluster to join, checked before any trial starts: a host:port that does not answer is one line."""
    address = os.environ.get("RAY_ADDRESS", "auto") if configured == "auto" else configured
    if address == "auto":
        return address  # the cluster started on this machine; ray.init says if there is none
    host, _, port = address.removeprefix("ray://").rpartition(":")
    try:
        with socket.create_connection((host, int(port)), timeout=5):
            return address
    except (OSError, ValueError) as error:
        raise TunelabError(f"cluster.address {address}: no Ray cluster answers there ({error}); start one with "
                           "`ray start --head` and give the address it prints") from None


AUTH_MODE = "RAY_AUTH_MODE"
AUTH_TOKEN_SOURCES = ("RAY_AUTH_TOKEN", "RAY_AUTH_TOKEN_PATH")
DEFAULT_AUTH_TOKEN = Path("~/.ray/auth_token")


def token_auth_mode() -> str | None:
    """``token`` where this machine holds a Ray token and nothing chose a mode. ``ray start --head``
    turns token authentication on when it finds one, but a driver that joins with ``ray.init(address)``
    sends it only when RAY_AUTH_MODE says so: without this, it is refused as unauthenticated."""
    if AUTH_MODE in os.environ:
        return None
    has_token = any(os.environ.get(source) for source in AUTH_TOKEN_SOURCES) or DEFAULT_AUTH_TOKEN.expanduser().is_file()
    return "token" if has_token else None


def connect(address: str, environment: dict[str, str]) -> None:
    import ray

    if mode := token_auth_mode():
        os.environ[AUTH_MODE] = mode  # read by Ray's client in this process only
    try:
        ray.init(address=address, logging_level=logging.ERROR, log_to_driver=False,
                 runtime_env={"env_vars": environment})
    except ConnectionError as error:
        raise TunelabError(f"cluster.address {address}: {str(error).splitlines()[0]}; start one with "
                           "`ray start --head` or set cluster.address") from None


def run_trials(share: Share, trials: list[dict], cluster: ClusterConfig,
               on_done: Callable[[TrialResult], None]) -> dict[str, TrialResult]:
    """Every trial (name, overrides, optional targets) as a Ray task on the cluster; ``on_done`` as
    each ends, in the order they end."""
    import ray
    from ray.exceptions import RayError

    connect(ray_address(cluster.address), share.environment)
    task = ray.remote(num_cpus=cluster.num_cpus, num_gpus=cluster.num_gpus, max_retries=cluster.max_retries)(run_trial)
    threads = max(1, int(cluster.num_cpus))
    pending = {}
    for trial in trials:
        ref = task.options(name=f"tunelab:{trial['name']}").remote(share, trial["name"], trial["overrides"],
                                                                    cluster.workdir, threads, tuple(trial.get("targets", ())))
        pending[ref] = trial["name"]
    results: dict[str, TrialResult] = {}
    try:
        while pending:
            (ref,), _ = ray.wait(list(pending), num_returns=1)
            name = pending.pop(ref)
            try:
                result = ray.get(ref)
            except RayError as error:  # the worker died more often than cluster.max_retries
                result = TrialResult(name, "Failed", f"trial {name}: {type(error).__name__}: {error}", "?", {})
            results[name] = result
            on_done(result)
    finally:
        ray.shutdown()
    return results


@contextmanager
def local_cluster(nodes: int = 2, num_cpus: int = 1, env: dict | None = None) -> Iterator[str]:
    """A Ray cluster of ``nodes`` nodes on this machine, its address; stopped on exit (the tests' and
    bench/ray_sweep.py's). Each node is a ``ray start --block`` process, stopped by ending it, not by
    ``ray stop``, which stops every Ray process of this user. Ray replaces 127.0.0.1 with this host's
    own address once a cluster has more than one node; nothing outside this machine is asked to join.
    A short temp folder: Ray's socket paths have a length limit."""
    ray = str(Path(sys.executable).parent / "ray")
    temp = tempfile.mkdtemp(prefix="ray", dir="/tmp")
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    common = [f"--num-cpus={num_cpus}", "--disable-usage-stats", "--block"]
    quiet = {"stdout": subprocess.DEVNULL, "stderr": subprocess.DEVNULL, "start_new_session": True, "env": env}
    started = [subprocess.Popen([ray, "start", "--head", f"--port={port}", "--include-dashboard=false",
                                 f"--temp-dir={temp}", *common], **quiet)]
    try:
        address = _wait_for_head(port)
        started += [subprocess.Popen([ray, "start", f"--address={address}", *common], **quiet) for _ in range(nodes - 1)]
        yield address
    finally:
        for node in reversed(started):
            node.terminate()
        for node in reversed(started):
            try:
                node.wait(timeout=60)
            except subprocess.TimeoutExpired:
                os.killpg(node.pid, signal.SIGKILL)
        shutil.rmtree(temp, ignore_errors=True)


def _wait_for_head(port: int, seconds: float = 60) -> str:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=1):
                return f"127.0.0.1:{port}"
        except OSError:
            time.sleep(0.5)
    raise TunelabError(f"no Ray head answered on port {port} within {seconds:.0f} s")
