"""What every stage process pays before its own work: its imports, and opening its MLflow run.

    make bench-startup                               # this tree, 5 fresh processes per figure
    python bench/stage_startup.py --root /tmp/old    # another checkout's stages (e.g. a git worktree of
                                                     # an older commit), measured by this script

A stage is a fresh Python process (DVC runs one per stage), and the suite runs ~110 of them, so
seconds of start-up add up to minutes. For each stage script: the time to run its top level in a
fresh interpreter (its imports; `main` is not called). Then the time to open and close a tracked
stage's MLflow run (`stage_run`: import MLflow, open the store, the pipeline's parent run, the
lineage tags from dvc.yaml and dvc.lock, params and pip freeze) on a sqlite store made beforehand.
Each figure is the median of fresh processes; run it alone on the machine. Results:
bench/results/stage_startup.json and .md (or --out).
"""

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]

IMPORTS = """
import runpy, sys, time
start = time.perf_counter()
runpy.run_path(sys.argv[1], run_name="startup")  # the script's top level: its imports, not main()
print(time.perf_counter() - start)
"""

TRACKED_START = """
import sys, time
from pathlib import Path
start = time.perf_counter()
sys.path.insert(0, "src")
from tunelab.config.compose import compose_conf
from tunelab.tracking.mlflow_run import stage_run
with stage_run("report", compose_conf(Path("conf")), sections=("eval",)):
    pass
print(time.perf_counter() - start)
"""


def seconds(code: str, root: Path, *args: str, env: dict[str, str] | None = None) -> float:
    result = subprocess.run([sys.executable, "-c", code, *args], cwd=root, capture_output=True, text=True,
                            env=env, check=True)
    return float(result.stdout.strip().splitlines()[-1])


def median_seconds(code: str, root: Path, repeats: int, *args: str, env: dict[str, str] | None = None) -> float:
    return round(statistics.median(seconds(code, root, *args, env=env) for _ in range(repeats)), 2)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--root", type=Path, default=REPO, help="the checkout whose stages are measured")
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--out", type=Path, default=REPO / "bench/results/stage_startup")
    args = parser.parse_args()
    root = args.root.resolve()
    env = {**os.environ, "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1"}
    imports = {}
    for script in sorted((root / "stages").glob("*.py")):
        imports[script.stem] = median_seconds(IMPORTS, root, args.repeats, str(script), env=env)
        print(f"{script.stem}: imports {imports[script.stem]} s", flush=True)
    with tempfile.TemporaryDirectory() as store:
        tracked = {**env, "MLFLOW_TRACKING_URI": f"sqlite:///{store}/mlflow.db"}
        seconds(TRACKED_START, root, env=tracked)  # creates the store's tables: once, not timed
        run_start = median_seconds(TRACKED_START, root, args.repeats, env=tracked)
    print(f"a tracked stage's MLflow run, opened and closed: {run_start} s")
    commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=root, capture_output=True, text=True).stdout.strip()
    result = {"commit": commit, "machine": f"{platform.machine()}, {os.cpu_count()} cores", "repeats": args.repeats,
              "imports_s": imports, "imports_total_s": round(sum(imports.values()), 2), "tracked_run_start_s": run_start}
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.with_suffix(".json").write_text(json.dumps(result, indent=2) + "\n")
    rows = "".join(f"| {name} | {value} |\n" for name, value in imports.items())
    args.out.with_suffix(".md").write_text(
        f"# Stage start-up at {commit} ({result['machine']}, median of {args.repeats} fresh processes)\n\n"
        f"| stage | imports s |\n|---|---|\n{rows}| all stages | {result['imports_total_s']} |\n\n"
        f"A tracked stage's MLflow run, opened and closed: {run_start} s\n")
    print(f"wrote {args.out.with_suffix('.md')}")


if __name__ == "__main__":
    main()
