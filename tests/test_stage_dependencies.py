"""dvc.yaml must list everything a stage's result depends on, or DVC serves stale results.

The code a stage runs is its script plus the import closure of that script within tunelab
(tunelab.code_deps, from the AST, so lazy imports inside functions count too), written into
dvc.yaml by `tunelab deps`; a change in any of those files must rerun the stage. The data it
reads is checked at run time in the end-to-end test (tests/test_pipeline.py, with the read audit).
"""

import re
import shutil
import subprocess
import sys
from pathlib import Path

from conftest import REPO_ROOT

from tunelab.code_deps import import_closure as closure_in

SRC = REPO_ROOT / "src"


def import_closure(script: Path) -> set[Path]:
    return closure_in(script, SRC)


def resolved_stages() -> dict[str, dict]:
    """dvc.yaml's stages with foreach expanded, as DVC resolves them (its own parser)."""
    from dvc.repo import Repo

    with Repo(str(REPO_ROOT)) as repo:
        return {stage.name: {"cmd": stage.cmd, "deps": [dep.def_path for dep in stage.deps]}
                for stage in repo.index.stages}


def covered(path: Path, deps: list[str]) -> bool:
    relative = path.relative_to(REPO_ROOT).as_posix()
    return any(relative == dep.rstrip("/") or relative.startswith(dep.rstrip("/") + "/") for dep in deps)


def test_every_stage_depends_on_the_whole_import_closure_of_its_script():
    missing = {}
    for name, stage in resolved_stages().items():
        script = REPO_ROOT / re.search(r"(stages/\w+\.py)", stage["cmd"]).group(1)
        needed = {script, *import_closure(script)}
        uncovered = sorted(p.relative_to(REPO_ROOT).as_posix() for p in needed if not covered(p, stage["deps"]))
        if uncovered:
            missing[name] = uncovered
    assert missing == {}, f"dvc.yaml deps miss code these stages import: {missing}"


def test_the_closure_follows_imports_inside_functions_and_through_other_modules():
    closure = {p.relative_to(SRC).as_posix() for p in import_closure(REPO_ROOT / "stages/benchmark.py")}
    assert "tunelab/benchmarking/inference.py" in closure  # imported inside measure()
    assert "tunelab/config/schema/__init__.py" in closure  # through tunelab.config.load
    assert "tunelab/__init__.py" in closure


def test_a_missing_dependency_is_reported(tmp_path):
    script = REPO_ROOT / "stages/evaluate.py"
    closure = import_closure(script)
    assert not all(covered(p, ["stages/evaluate.py", "src/tunelab/evaluation"]) for p in closure)


def test_no_stage_depends_on_code_it_does_not_import():
    """A code dependency the stage never imports reruns it for nothing (an edit of a deployment
    method must not retrain): each src/ dep holds at least one file of the closure."""
    superfluous = {}
    for name, stage in resolved_stages().items():
        script = REPO_ROOT / re.search(r"(stages/\w+\.py)", stage["cmd"]).group(1)
        needed = import_closure(script)
        unused = [dep for dep in stage["deps"] if dep.startswith("src/") and not any(covered(p, [dep]) for p in needed)]
        if unused:
            superfluous[name] = unused
    assert superfluous == {}, f"dvc.yaml deps list code these stages never import: {superfluous}"


def test_dvc_yaml_holds_the_code_deps_tunelab_deps_writes(tmp_path):
    """`tunelab deps --check` passes on the repository; with an import dropped from a stage's deps
    it fails, naming the stage, and `tunelab deps` puts it back, comments and all."""
    assert subprocess.run([sys.executable, "-m", "tunelab.cli", "deps", "--check"], cwd=REPO_ROOT,
                          capture_output=True, text=True).returncode == 0
    for name in ("dvc.yaml", "stages", "src"):
        (shutil.copytree if (REPO_ROOT / name).is_dir() else shutil.copy)(REPO_ROOT / name, tmp_path / name)
    pristine = (tmp_path / "dvc.yaml").read_text()
    (tmp_path / "dvc.yaml").write_text(pristine.replace("      - src/tunelab/config/launchers.py\n", "", 1))
    stale = subprocess.run([sys.executable, "-m", "tunelab.cli", "deps", "--check"], cwd=tmp_path,
                           capture_output=True, text=True)
    assert stale.returncode == 1 and "code deps stale for base" in stale.stdout, stale.stdout + stale.stderr
    subprocess.run([sys.executable, "-m", "tunelab.cli", "deps"], cwd=tmp_path, check=True, capture_output=True)
    assert (tmp_path / "dvc.yaml").read_text() == pristine
