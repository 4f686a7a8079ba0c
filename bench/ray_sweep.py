"""What the Ray executor costs against DVC's queue, and what a second node buys.

    make bench-ray                               # on the tests' tiny project, made first (about 2 minutes)
    python bench/ray_sweep.py --project PATH     # on a committed tunelab project (its finished pipeline)

Runs three 4-run learning-rate sweeps on a copy of PATH (different rates each, so none restores
another's training from the run cache): on DVC's queue with 2 workers, on a local Ray cluster of
two 1-CPU nodes, and on one 1-CPU node. Reports each sweep's wall time and, for Ray, each trial's
seconds to clone, run (``dvc exp run --pull``, pulls included) and push. The project's baseline is
pushed first (to its default DVC remote, else to a folder beside the copy), so every trial
restores the stages the sweep does not change. Without --project it makes the tests' tiny
project (tests/pipeline_project.py: tiny random Llama, 60 reviews) and runs its pipeline once.
Run it alone on the machine. Results:
bench/results/ray_sweep.json and .md.
"""

import argparse
import json
import os
import platform
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from tunelab.sweeps.ray_cluster import local_cluster

RESULTS = Path(__file__).resolve().parent / "results"
RATES = {"queue, 2 workers": "1e-4,2e-4,4e-4,5e-4", "ray, 2 nodes x 1 CPU": "1.1e-4,2.1e-4,4.1e-4,5.1e-4",
         "ray, 1 node x 1 CPU": "1.2e-4,2.2e-4,4.2e-4,5.2e-4"}


def tunelab(project: Path, *args: str) -> float:
    started = time.perf_counter()
    result = subprocess.run([str(Path(sys.executable).parent / "tunelab"), *args], cwd=project, capture_output=True,
                            text=True)
    if result.returncode != 0:
        sys.exit(f"tunelab {' '.join(args)} failed:\n{(result.stdout + result.stderr)[-3000:]}")
    return time.perf_counter() - started


def tiny_project(work: Path) -> Path:
    """The tests' tiny project with its pipeline run and committed (as tests/conftest.py's baseline)."""
    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
    from conftest import make_baseline
    from tiny_model import save_tiny_model

    (work / "tiny").mkdir()
    make_baseline(work / "tiny", save_tiny_model(work / "tiny-llama"))
    return work / "tiny" / "repo"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--project", type=Path, help="a committed tunelab project (default: the tests' tiny one)")
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="ray-sweep-"))
    project = work / "project"
    if args.project:
        shutil.copytree(args.project, project, symlinks=True)
    else:
        project = tiny_project(work)
    env = {**os.environ, "PATH": f"{Path(sys.executable).parent}:{os.environ['PATH']}", "RAY_USAGE_STATS_ENABLED": "0"}
    has_remote = subprocess.run(["dvc", "remote", "default"], cwd=project, env=env, capture_output=True).returncode == 0
    if not has_remote:  # a folder beside the copy, in this clone's local config: trials are told its URL
        subprocess.run(["dvc", "remote", "add", "--local", "--default", "bench", str(work / "storage")], cwd=project,
                       env=env, check=True)
    subprocess.run([str(Path(sys.executable).parent / "tunelab"), "push"], cwd=project, check=True, env=env,
                   stdout=subprocess.DEVNULL)
    rows = []
    for index, (case, rates) in enumerate(RATES.items(), start=1):
        name = f"bench{index}"
        grid = ["-m", f"train.learning_rate={rates}", "--name", name]
        if case.startswith("queue"):
            wall = tunelab(project, *grid, "--jobs", "2")
            trials = {}
        else:
            nodes = 2 if "2 nodes" in case else 1
            with local_cluster(nodes=nodes, num_cpus=1, env=env) as address:
                wall = tunelab(project, *grid, "--executor", "ray", f"cluster.address={address}",
                               f"cluster.workdir={work / 'trials'}")
            trials = json.loads((project / "sweeps" / name / "trials.json").read_text())
        steps = {step: statistics.median(t["seconds"][step] for t in trials.values()) for step in ("clone", "run", "push")
                 } if trials else {}
        rows.append({"case": case, "wall_seconds": round(wall, 1), "trial_median_seconds": steps})
        print(rows[-1], flush=True)
    shutil.rmtree(work, ignore_errors=True)
    RESULTS.mkdir(exist_ok=True)
    record = {"machine": f"{platform.processor() or platform.machine()}, {os.cpu_count()} cores", "rows": rows}
    (RESULTS / "ray_sweep.json").write_text(json.dumps(record, indent=2) + "\n")
    lines = ["| sweep (4 runs) | wall s | trial clone s | trial run s | trial push s |", "|---|---|---|---|---|"]
    for row in rows:
        steps = row["trial_median_seconds"]
        lines.append(f"| {row['case']} | {row['wall_seconds']} | " + " | ".join(
            f"{steps[step]:.1f}" if steps else "—" for step in ("clone", "run", "push")) + " |")
    (RESULTS / "ray_sweep.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
