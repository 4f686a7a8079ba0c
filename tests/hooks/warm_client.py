"""The warm stage runner's client (warm_server.py), called by sitecustomize.py in every Python
process the suite starts.

With TUNELAB_WARM_RUNNER=<socket>, ``python stages/NAME.py ...`` (no interpreter options) hands its
run to the server, which forks it from a process that has the libraries imported; this process
forwards the signals it gets to that stage and exits as it does. Anything else, or a server that
says the environment differs, or no server, and the process goes on as if this file did not exist.
"""

import json
import os
import signal
import socket
import sys

FORWARDED = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP, signal.SIGQUIT, signal.SIGUSR1, signal.SIGUSR2)


def is_stage_run() -> bool:
    # python SCRIPT ARGS... with SCRIPT in a folder called stages, as tunelab.stage's code-origin check has it
    return (len(sys.orig_argv) >= 2 and sys.orig_argv[1] == sys.argv[0] and sys.argv[0].endswith(".py")
            and os.path.basename(os.path.dirname(os.path.abspath(sys.argv[0]))) == "stages")


def _forward_to(pid: int):
    return lambda signum, _frame: os.kill(pid, signum)


def run_warm(address: str) -> None:
    """Runs this process's stage in the runner and exits as it did; returns if it is to run cold, here."""
    with socket.socket(socket.AF_UNIX, socket.SOCK_SEQPACKET) as conn:
        try:
            conn.connect(address)
            script_folder = os.path.dirname(os.path.realpath(sys.argv[0]))  # what python puts first on sys.path
            request = {"argv": sys.argv, "cwd": os.getcwd(), "env": dict(os.environ),
                       "path": [script_folder, *sys.path]}
            socket.send_fds(conn, [json.dumps(request).encode()], [0, 1, 2])
            started = json.loads(conn.recv(1 << 16))
        except OSError:  # no server (yet), or it could not take the run: run cold
            return
        if "cold" in started:
            return
        for signum in FORWARDED:
            signal.signal(signum, _forward_to(started["pid"]))
        message = conn.recv(1 << 16)
    if not message:
        print("warm stage runner: the server ended before the stage", file=sys.stderr)
        os._exit(1)
    ended = json.loads(message)
    if "signal" in ended:
        signal.signal(ended["signal"], signal.SIG_DFL)
        os.kill(os.getpid(), ended["signal"])
    os._exit(ended.get("exit", 1))
