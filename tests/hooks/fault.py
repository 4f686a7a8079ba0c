"""Runs a script with a fault at a chosen moment: the first write whose path matches a pattern.

    python tests/hooks/fault.py PATTERN kill|disk-full SCRIPT [ARGS...]

``kill`` SIGKILLs the process as it is about to write (nothing in it can clean up: a power cut,
the OOM killer); ``disk-full`` makes that write fail with ENOSPC, as a full disk would. Python's
audit hooks see every file opened for writing and every folder made.
"""

import errno
import os
import re
import runpy
import signal
import sys

pattern, action, script = re.compile(sys.argv[1]), sys.argv[2], sys.argv[3]
WRITE_FLAGS = os.O_WRONLY | os.O_RDWR | os.O_CREAT | os.O_APPEND | os.O_TRUNC


def written_path(event: str, args: tuple) -> str | None:
    """The path a write, a new folder or a rename (its target) is about to create, if any."""
    if event == "open":
        path, mode, flags = args
        writing = any(c in mode for c in "wax+") if isinstance(mode, str) else bool((flags or 0) & WRITE_FLAGS)
    else:
        path, writing = {"os.mkdir": args[0], "os.rename": args[1] if len(args) > 1 else None}.get(event), True
    return os.fsdecode(path) if writing and isinstance(path, (str, bytes, os.PathLike)) else None


def hook(event: str, args: tuple) -> None:
    path = written_path(event, args)
    if path is not None and pattern.search(path):
        if action == "kill":
            os.kill(os.getpid(), signal.SIGKILL)
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), path)


sys.addaudithook(hook)
sys.argv = sys.argv[3:]
runpy.run_path(script, run_name="__main__")
