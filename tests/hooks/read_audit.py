"""Records what a process reads, for the dependency tests (tests/pipeline_project.audited_env).

With TUNELAB_AUDIT_READS=<folder>, every file or folder the process opens for reading under
its working directory is written, at exit, to <folder>/<pid>.json with the process's argv
(files opened and folders listed apart) and whether it was started by the warm stage runner
(torch already imported: ``preloaded``).
Python's audit hooks see every open (``open``, ``io.open_code``, ``os.open``) and listing.

Installed by sitecustomize.py as a process starts, or by the warm stage runner in a stage it forks
(warm_server.py), once the stage has the caller's working directory and environment.
"""

import atexit
import json
import os
import sys

_WRITE_FLAGS = os.O_WRONLY | os.O_RDWR | os.O_CREAT | os.O_APPEND | os.O_TRUNC


def install_if_asked() -> None:
    if folder := os.environ.get("TUNELAB_AUDIT_READS"):
        install(folder, root=os.getcwd())


def install(folder: str, root: str) -> None:
    reads: dict[str, set[str]] = {"opened": set(), "listed": set()}
    preloaded = "torch" in sys.modules  # nothing a stage imports comes before this, cold

    def record(kind: str, path) -> None:
        if isinstance(path, bytes):
            path = os.fsdecode(path)
        if isinstance(path, str):
            full = os.path.abspath(path)
            if full.startswith(root + os.sep) and os.path.exists(full):  # a failed probe reads nothing
                reads[kind].add(os.path.relpath(full, root))

    def hook(event: str, args: tuple) -> None:
        if event == "open":
            path, mode, flags = args
            reading = (not any(c in mode for c in "wax+")) if isinstance(mode, str) else not (flags or 0) & _WRITE_FLAGS
            if reading:
                record("opened", path)
        elif event in ("os.listdir", "os.scandir"):
            record("listed", args[0] if args and args[0] is not None else ".")

    def save() -> None:
        with open(os.path.join(folder, f"{os.getpid()}.json"), "w") as handle:
            json.dump({"argv": sys.argv, "preloaded": preloaded, **{kind: sorted(paths) for kind, paths in reads.items()}},
                      handle)

    def save_at_the_end_of_a_forked_child() -> None:
        # multiprocessing's forked children end with os._exit, which skips atexit; they run its finalizers
        from multiprocessing import util

        util.Finalize(None, save, exitpriority=100)

    sys.addaudithook(hook)
    atexit.register(save)
    os.register_at_fork(after_in_child=save_at_the_end_of_a_forked_child)
