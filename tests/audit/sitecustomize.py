"""Records what a process reads, for the dependency test: on PYTHONPATH only in that test.

With TUNELAB_AUDIT_READS=<folder>, every file or folder the process opens for reading under
its working directory is written, at exit, to <folder>/<pid>.json with the process's argv
(files opened and folders listed apart).
Python's audit hooks see every open (``open``, ``io.open_code``, ``os.open``) and listing.
"""

import atexit
import json
import os
import sys

_folder = os.environ.get("TUNELAB_AUDIT_READS")

if _folder:
    _root = os.getcwd()
    _reads: dict[str, set[str]] = {"opened": set(), "listed": set()}
    _WRITE_FLAGS = os.O_WRONLY | os.O_RDWR | os.O_CREAT | os.O_APPEND | os.O_TRUNC

    def _record(kind: str, path) -> None:
        if isinstance(path, bytes):
            path = os.fsdecode(path)
        if isinstance(path, str):
            full = os.path.abspath(path)
            if full.startswith(_root + os.sep) and os.path.exists(full):  # a failed probe reads nothing
                _reads[kind].add(os.path.relpath(full, _root))

    def _hook(event: str, args: tuple) -> None:
        if event == "open":
            path, mode, flags = args
            reading = (not any(c in mode for c in "wax+")) if isinstance(mode, str) else not (flags or 0) & _WRITE_FLAGS
            if reading:
                _record("opened", path)
        elif event in ("os.listdir", "os.scandir"):
            _record("listed", args[0] if args and args[0] is not None else ".")

    def _save() -> None:
        with open(os.path.join(_folder, f"{os.getpid()}.json"), "w") as handle:
            json.dump({"argv": sys.argv, **{kind: sorted(paths) for kind, paths in _reads.items()}}, handle)

    def _save_at_the_end_of_a_forked_child() -> None:
        # multiprocessing's forked children end with os._exit, which skips atexit; they run its finalizers
        from multiprocessing import util

        util.Finalize(None, _save, exitpriority=100)

    sys.addaudithook(_hook)
    atexit.register(_save)
    os.register_at_fork(after_in_child=_save_at_the_end_of_a_forked_child)
