"""The suite's warm stage runner: one process per test worker that has imported the libraries the
stages import (torch, transformers, peft, TRL, MLflow, datasets) and forks a child per stage run.

    python tests/hooks/warm_server.py SOCKET        # started by tests/conftest.py, one per pytest worker

Why: most of the suite's stage runs are tiny models doing 1-4 s of work after 5-13 s of library
imports; a stage forked from here starts with those imports done. What it changes for the stage is
only where its interpreter comes from: it runs its own script, from the start (``runpy``), with
the caller's argv, sys.path, working directory, environment and stdin/stdout/stderr (passed as file
descriptors), and the caller exits as the stage does (its exit code, or the signal that ended it).
tunelab itself is not preloaded: each project has its own copy of src/, which the stage imports.

The client is warm_client.py, called by sitecustomize.py in every Python process the suite starts
(PYTHONPATH); a stage whose reads a test audits is audited here, in its child (read_audit.py).
A stage whose environment differs from this server's in anything the preloaded libraries may have
read at import (ALLOWED_PREFIXES and ALLOWED_NAMES say what may differ) runs cold, as it would
without the suite: fault-injection runs, DDP workers, a test's own HF_* or OMP_* settings. So does a
stage whose own code reaches a preloaded submodule it never imports (import_check.py): forked, it
would find the module this server imported; cold, it fails, and so it must here. A caller
killed outright (SIGKILL) takes its stage with it: its connection closes and the stage is killed.

Hand-written because no library does it: multiprocessing's forkserver runs pickled functions, not
a script with a caller's file descriptors, environment and exit status.
"""

import gc
import json
import os
import runpy
import select
import signal
import socket
import sys
import time
from importlib.machinery import PathFinder
from pathlib import Path

import read_audit
from import_check import ReachChecker

# What may differ between this server's environment and a warm stage's. Checked with a recording
# os.environ around the preload (2026-12-03, the pinned versions): none of these is read at import
# except by fsspec's, tqdm's and networkx's scans of the whole environment for their own prefixes,
# COLUMNS/LINES by accelerate's interactive `accelerate config` menu (shutil.get_terminal_size), and
# MLflow's telemetry session id, which MLflow sets when it is not set. The rest are DVC's, its queue
# workers' (celery's CELERY_LOG_ and billiard's _MP_FORK_), a Ray worker's (RAY_, and the
# PYTHONBREAKPOINT and SPT_NOENV it sets: read when breakpoint() is called and by setproctitle, which
# is not preloaded; none of the three read at import, checked the same way), the test harness's and
# tunelab's own (tunelab is not preloaded).
ALLOWED_PREFIXES = ("DVC_", "TUNELAB_", "GIT_AUTHOR_", "GIT_COMMITTER_", "MLFLOW_SYSTEM_METRICS_",
                    "MLFLOW_HTTP_REQUEST_", "CELERY_LOG_", "_MP_FORK_", "RAY_")
# PYTHONPATH is not read at import but makes sys.path, which the request carries: `shadowed` checks that
# the caller's sys.path (its PYTHONPATH and the stage's own folder) finds every preloaded module where
# this server found it.
ALLOWED_NAMES = {"MLFLOW_TRACKING_URI", "_MLFLOW_TELEMETRY_SESSION_ID", "PYTEST_CURRENT_TEST", "PATH", "PWD",
                 "OLDPWD", "SHLVL", "_", "COLUMNS", "LINES", "PYTHONPATH",
                 "MLFLOW_SUPPRESS_PRINTING_URL_TO_STDOUT",  # read when a run ends (tunelab sets it), never at import
                 "PYTHONBREAKPOINT", "SPT_NOENV"}
MAX_REQUEST = 1 << 20


def allowed_to_differ(name: str) -> bool:
    return name in ALLOWED_NAMES or name.startswith(ALLOWED_PREFIXES)


def differing(env: dict, set_by_imports: dict, theirs: dict) -> list[str]:
    """The variables that make a stage run cold: set differently here (before the imports) and there,
    and not allowed to. A variable the imports set may be unset there, or set as they set it (a caller
    that imported torch itself passes torch's TORCHINDUCTOR_CACHE_DIR on)."""
    def same(name: str) -> bool:
        if name in set_by_imports and theirs.get(name) in (None, set_by_imports[name]):
            return True
        return env.get(name) == theirs.get(name) or allowed_to_differ(name)

    return sorted(name for name in env.keys() | theirs.keys() if not same(name))


def shadowed(path: list[str]) -> list[str]:
    """The modules this server imported that ``path`` (a caller's sys.path) would import from somewhere
    else (its own folder or PYTHONPATH holding a module of the same name), or not at all. Top-level
    names only: a package's submodules are found inside it."""
    moved = []
    for name, module in list(sys.modules.items()):
        spec = getattr(module, "__spec__", None)
        if "." in name or spec is None or spec.name != name or (mine := where(spec)) is None:
            continue  # a submodule, an extension module's alias, or one found before sys.path is searched
        if where(PathFinder.find_spec(name, path)) != mine:
            moved.append(name)
    return sorted(moved)


def where(spec) -> str | list[str] | None:
    """A module's file, or a namespace package's folders; None if it has neither (built in, frozen, made at run time)."""
    if spec is None:
        return None
    if spec.has_location:
        return spec.origin
    return None if spec.submodule_search_locations is None else [str(folder) for folder in spec.submodule_search_locations]


def why_cold(request: dict, env: dict, set_by_imports: dict, reaches: ReachChecker) -> list[str]:
    """Why a run must start cold, in its caller, rather than be forked from here (none: it may be)."""
    return ([f"{name} {env.get(name)!r} here, {request['env'].get(name)!r} there"
             for name in differing(env, set_by_imports, request["env"])]
            + [f"{name} is imported from elsewhere on its sys.path" for name in shadowed(request["path"])]
            or reaches.unimported(request, preloaded=set(sys.modules)))


def preload() -> None:
    """What the stages import (a stage's own first imports then cost nothing)."""
    import datasets  # noqa: F401
    import mlflow  # noqa: F401
    import mlflow.tracking.fluent  # noqa: F401
    import peft  # noqa: F401
    import torch  # noqa: F401
    import transformers.models.llama.modeling_llama  # noqa: F401
    from transformers import Trainer  # noqa: F401
    from trl import DPOTrainer  # noqa: F401


def log(line: str) -> None:
    print(line, file=sys.stderr, flush=True)


def reply(conn: socket.socket, message: dict) -> None:
    try:
        conn.send(json.dumps(message).encode())
    except OSError:  # the caller is gone
        pass


def serve(listener: socket.socket, env: dict, set_by_imports: dict) -> tuple[dict, list[int]]:
    """Accept stage runs until one is forked; returns (the request, its file descriptors) in the child.
    ``env``: this server's environment before its imports, which a warm stage's must match."""
    running: dict[int, tuple[int, socket.socket, float]] = {}  # pidfd -> (pid, the caller's connection, when forked)
    reaches = ReachChecker()
    parent = os.pidfd_open(os.getppid())  # the pytest worker: killed outright, it cannot stop this server
    while True:
        watched = [listener, parent, *running, *(conn for _pid, conn, _forked in running.values())]
        ready = select.select(watched, [], [])[0][0]  # one at a time: each may end what another was about
        if ready == parent:
            log("the pytest worker is gone: stopping")
            for pid, _conn, _forked in running.values():
                os.kill(pid, signal.SIGKILL)
            sys.exit(0)
        elif ready is listener:
            conn = listener.accept()[0]
            message, fds, _flags, _address = socket.recv_fds(conn, MAX_REQUEST, 3)
            request = json.loads(message)
            if cold := why_cold(request, env, set_by_imports, reaches):
                log(f"cold {request['argv'][0]}: " + ", ".join(cold))
                reply(conn, {"cold": cold})
                conn.close()
                for fd in fds:
                    os.close(fd)
                continue
            sys.stdout.flush()  # nothing of ours in the stage's streams
            sys.stderr.flush()
            pid = os.fork()
            if pid == 0:
                listener.close()
                for pidfd, (_pid, other, _forked) in running.items():
                    os.close(pidfd)
                    other.close()
                conn.close()
                os.close(parent)
                return request, fds
            for fd in fds:
                os.close(fd)
            log(f"warm {request['argv'][0]} (pid {pid})")
            running[os.pidfd_open(pid)] = (pid, conn, time.monotonic())
            reply(conn, {"pid": pid})
        elif isinstance(ready, int):  # a stage ended: its caller exits the same way
            pid, conn, forked = running.pop(ready)
            os.close(ready)
            status = os.waitpid(pid, 0)[1]
            ended = {"signal": os.WTERMSIG(status)} if os.WIFSIGNALED(status) else {"exit": os.WEXITSTATUS(status)}
            log(f"ended pid {pid} after {time.monotonic() - forked:.1f} s: {ended}")
            reply(conn, ended)
            conn.close()
        else:  # a caller's connection closed while its stage runs: it was killed outright, and so is its stage
            pidfd = next(pidfd for pidfd, (_pid, conn, _forked) in running.items() if conn is ready)
            pid, conn, forked = running.pop(pidfd)
            log(f"the caller of pid {pid} is gone after {time.monotonic() - forked:.1f} s: killing it")
            os.kill(pid, signal.SIGKILL)
            os.waitpid(pid, 0)
            os.close(pidfd)
            conn.close()


def run_stage(request: dict, fds: list[int], set_by_imports: dict) -> None:
    """In the forked child: become the caller's stage process, then run its script as ``python`` would.
    ``set_by_imports``: what the preloaded imports set in the environment, as they would in a cold stage."""
    for target, fd in enumerate(fds):
        os.dup2(fd, target)
        os.close(fd)
    os.chdir(request["cwd"])
    os.environ.clear()
    os.environ.update({**set_by_imports, **request["env"]})  # they set what was unset, and kept what was set
    sys.argv, sys.path[:] = request["argv"], request["path"]
    sys.stdout.reconfigure(line_buffering=sys.stdout.isatty())  # as Python sets it at startup
    read_audit.install_if_asked()  # as sitecustomize.py does in a cold stage
    runpy.run_path(sys.argv[0], run_name="__main__")


def main() -> None:
    address = sys.argv[1]
    env = dict(os.environ)
    preload()
    set_by_imports = {name: value for name, value in os.environ.items() if env.get(name) != value}
    gc.freeze()  # the imports' objects: a stage's collections skip them, so it does not copy their pages (Python's gc docs)
    Path(f"{address}.set_by_imports.json").write_text(json.dumps(set_by_imports))  # for tests/test_warm_runner.py
    listener = socket.socket(socket.AF_UNIX, socket.SOCK_SEQPACKET)
    listener.bind(f"{address}.tmp")
    listener.listen(64)
    os.rename(f"{address}.tmp", address)  # callers find the socket only once the imports are done
    log(f"ready: {address}; the imports set {set_by_imports}")
    run_stage(*serve(listener, env, set_by_imports), set_by_imports)


if __name__ == "__main__":
    main()
