"""A stage runs the code beside it: the tree DVC runs it in, not the editable install's src/.

`dvc exp run --queue` runs each experiment's stages in a copy of the repository; dvc.lock and
the run cache record that copy's code, so that is the code that must run.
"""

import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import REPO_ROOT

MARK = "tunelab imported from the copy"


@pytest.fixture
def copy(tmp_path) -> Path:
    """The project's stages and src/ copied, the copy's tunelab saying so when imported."""
    tree = tmp_path / "copy"
    shutil.copytree(REPO_ROOT / "stages", tree / "stages")
    shutil.copytree(REPO_ROOT / "src/tunelab", tree / "src/tunelab", ignore=shutil.ignore_patterns("__pycache__"))
    init = tree / "src/tunelab/__init__.py"
    init.write_text(init.read_text() + f"\nprint({MARK!r})\n")
    (tmp_path / "work").mkdir()
    return tree


def run_in(folder: Path, *command: str) -> subprocess.CompletedProcess:
    return subprocess.run(command, cwd=folder, capture_output=True, text=True)


def test_a_stage_imports_the_src_beside_its_script_not_the_workspaces(copy):
    result = run_in(copy.parent / "work", sys.executable, str(copy / "stages/fetch.py"))
    assert MARK in result.stdout
    assert result.returncode == 2 and "params.yaml: not found" in result.stderr  # it ran, as a stage, on the copy


def test_the_benchmarks_child_process_imports_the_same_copy(copy):
    result = run_in(copy.parent / "work", sys.executable, str(copy / "stages/benchmark.py"), "--measure", "out", "merged")
    assert MARK in result.stdout and "params.yaml: not found" in result.stderr


def test_accelerate_launch_imports_the_same_copy(copy):
    accelerate = str(Path(sys.executable).parent / "accelerate")
    result = run_in(copy.parent / "work", accelerate, "launch", "--num_processes", "1", "--num_machines", "1",
                    "--mixed_precision", "no", "--dynamo_backend", "no", str(copy / "stages/fetch.py"))
    assert MARK in result.stdout and "params.yaml: not found" in result.stderr


def test_a_stage_refuses_to_run_on_tunelab_imported_from_elsewhere(copy):
    script = copy / "stages/fetch.py"
    elsewhere = (f"import runpy, sys; sys.path.insert(0, {str(REPO_ROOT / 'src')!r}); import tunelab; "
                 f"sys.argv = [{str(script)!r}]; runpy.run_path({str(script)!r}, run_name='__main__')")
    result = run_in(copy.parent / "work", sys.executable, "-c", elsewhere)
    assert result.returncode == 2
    assert result.stderr.strip() == (
        f"error: {script}: tunelab was imported from {REPO_ROOT / 'src/tunelab'}, not from this tree's "
        f"{copy / 'src/tunelab'}; the results would not come from the code dvc.lock records. Run the stage as "
        "dvc.yaml does (python stages/NAME.py), without anything that imports tunelab first")
