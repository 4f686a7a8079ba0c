"""What tracking costs a stage on the team's server against the local sqlite store.

    make bench-tracking          # after make setup; starts its own PostgreSQL + MLflow server on loopback

Times a tracked stage's MLflow run, opened and closed (``stage_run``: the store, the pipeline's
parent run, lineage tags, params and pip freeze) in fresh processes, first on a sqlite store,
then on ``tunelab tracking-server`` (PostgreSQL from the machine's binaries, MLflow proxying
artifacts), each store made beforehand. Each figure is the median of fresh processes; run it
alone on the machine. Results: bench/results/tracking_overhead.json and .md.
"""

import json
import os
import platform
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

from stage_startup import REPO, TRACKED_START, median_seconds, seconds

REPEATS = 5


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def start_server(folder: Path) -> tuple[subprocess.Popen, str]:
    os.chmod(folder, 0o755)  # PostgreSQL runs as the postgres user when this runs as root
    port = free_port()
    server = subprocess.Popen([sys.executable, "-m", "tunelab.cli", "tracking-server", "--pgdata", str(folder / "pg"),
                               "--artifacts", str(folder / "artifacts"), "--port", str(port)],
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    url = f"http://127.0.0.1:{port}"
    for _ in range(600):
        try:
            with urllib.request.urlopen(f"{url}/health", timeout=2):
                return server, url
        except OSError:
            time.sleep(0.5)
    raise SystemExit("the tracking server did not start")


def main() -> None:
    env = {**os.environ, "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1"}
    figures = {}
    with tempfile.TemporaryDirectory() as scratch:
        folder = Path(scratch)
        stores = {"sqlite": f"sqlite:///{folder}/mlflow.db"}
        server, stores["server (PostgreSQL)"] = start_server(folder)
        try:
            for name, uri in stores.items():
                tracked = {**env, "MLFLOW_TRACKING_URI": uri}
                seconds(TRACKED_START, REPO, env=tracked)  # the store's tables and the experiment: once, not timed
                figures[name] = median_seconds(TRACKED_START, REPO, REPEATS, env=tracked)
                print(f"{name}: a tracked stage's MLflow run, opened and closed: {figures[name]} s", flush=True)
        finally:
            os.killpg(server.pid, signal.SIGTERM)
            server.wait(timeout=60)
    commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=REPO, capture_output=True, text=True).stdout.strip()
    result = {"commit": commit, "machine": f"{platform.machine()}, {os.cpu_count()} cores", "repeats": REPEATS,
              "tracked_run_start_s": figures}
    out = REPO / "bench/results/tracking_overhead"
    out.with_suffix(".json").write_text(json.dumps(result, indent=2) + "\n")
    rows = "".join(f"| {name} | {value} |\n" for name, value in figures.items())
    out.with_suffix(".md").write_text(f"# Tracking overhead at {commit} ({result['machine']}, median of {REPEATS} fresh "
                                      f"processes)\n\n| store | a stage's MLflow run, opened and closed, s |\n|---|---|\n{rows}")
    print(f"wrote {out.with_suffix('.md')}")


if __name__ == "__main__":
    main()
