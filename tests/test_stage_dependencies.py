"""dvc.yaml must list everything a stage's result depends on, or DVC serves stale results.

The code a stage runs is its script plus the import closure of that script within tunelab
(found here statically, from the AST, so lazy imports inside functions count too); a change in
any of those files must rerun the stage. The data it reads is checked at run time in the
end-to-end test (tests/test_pipeline.py, with the read audit of tests/audit/).
"""

import ast
import re
from pathlib import Path

from conftest import REPO_ROOT

SRC = REPO_ROOT / "src"


def module_file(name: str) -> Path | None:
    base = SRC.joinpath(*name.split("."))
    if (base / "__init__.py").is_file():
        return base / "__init__.py"
    return base.with_suffix(".py") if base.with_suffix(".py").is_file() else None


def imported_modules(path: Path) -> set[str]:
    names = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names.add(node.module)
            names.update(f"{node.module}.{alias.name}" for alias in node.names)  # a submodule imported by name
    return {name for name in names if name.split(".")[0] == "tunelab"}


def import_closure(script: Path) -> set[Path]:
    """Every tunelab source file the script imports, directly or through another, packages' __init__ included."""
    seen: set[Path] = set()
    todo = [script]
    while todo:
        for name in imported_modules(todo.pop()):
            parts = name.split(".")
            for depth in range(1, len(parts) + 1):  # importing a.b.c runs a/__init__ and a/b/__init__ too
                found = module_file(".".join(parts[:depth]))
                if found is not None and found not in seen:
                    seen.add(found)
                    todo.append(found)
    return seen


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
    assert "tunelab/config/schema.py" in closure  # through tunelab.config.load
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
