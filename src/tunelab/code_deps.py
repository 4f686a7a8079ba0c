"""The code each stage runs, written into dvc.yaml: `tunelab deps` (``--check`` only compares).

A stage's code is its script plus the import closure of that script within tunelab, found
statically from the AST, so imports inside functions count too; a change in any of those files
must rerun the stage, and a change anywhere else must not. Listing them by hand drifted; this
writes them, so adding an import never needs an edit of dvc.yaml. Each stage's other deps (its
script, data, models, and their comments) are kept as they are; its ``src/tunelab`` entries are
replaced by the closure, a whole folder where every module in it is imported.

The walk is written here, over the standard ``ast`` module: the standard modulefinder would follow
every third-party import too (torch, transformers: minutes per stage) to find the few files of ours.
"""

import ast
import re
from pathlib import Path

from tunelab.errors import TunelabError

PACKAGE = "tunelab"
SCRIPT = re.compile(r"(stages/\w+\.py)")


def module_file(src: Path, name: str) -> Path | None:
    base = src.joinpath(*name.split("."))
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
    return {name for name in names if name.split(".")[0] == PACKAGE}


def import_closure(script: Path, src: Path) -> set[Path]:
    """Every tunelab source file the script imports, directly or through another, packages' __init__ included."""
    seen: set[Path] = set()
    todo = [script]
    while todo:
        for name in imported_modules(todo.pop()):
            parts = name.split(".")
            for depth in range(1, len(parts) + 1):  # importing a.b.c runs a/__init__ and a/b/__init__ too
                found = module_file(src, ".".join(parts[:depth]))
                if found is not None and found not in seen:
                    seen.add(found)
                    todo.append(found)
    return seen


def covering_paths(closure: set[Path], src: Path) -> list[Path]:
    """The closure as few paths as say exactly it: a subpackage folder where every module under it
    is imported (its data files, e.g. chat templates, with it), else the files one by one."""
    package = src / PACKAGE
    whole = {folder for folder in package.rglob("*") if folder.is_dir() and folder.name != "__pycache__"
             and all(module in closure for module in folder.rglob("*.py"))}
    paths = set()
    for module in closure:
        folders = [folder for folder in whole if folder in module.parents]
        paths.add(min(folders, key=lambda folder: len(folder.parts)) if folders else module)
    return sorted(paths, key=lambda path: path.relative_to(src).as_posix())


def code_deps(script: Path, root: Path) -> list[str]:
    src = root / "src"
    return [f"src/{path.relative_to(src).as_posix()}" for path in covering_paths(import_closure(script, src), src)]


def stage_bodies(pipeline: dict) -> dict:
    """Each stage's definition: the stage itself, or a foreach stage's ``do``."""
    return {name: stage.get("do", stage) for name, stage in pipeline["stages"].items()}


def with_code_deps(deps: list, generated: list[str]) -> None:
    """``deps`` (a ruamel sequence, comments kept) with its src/tunelab entries replaced by ``generated``."""
    positions = [i for i, dep in enumerate(deps) if isinstance(dep, str) and dep.startswith(f"src/{PACKAGE}")]
    at = positions[0] if positions else 1  # after the script
    for i in reversed(positions):
        del deps[i]
    for offset, path in enumerate(generated):
        deps.insert(at + offset, path)


def update(root: Path, check: bool = False) -> list[str]:
    """Rewrite dvc.yaml's code deps (or, with ``check``, only say which stages differ); the stages changed."""
    from ruamel.yaml import YAML

    yaml = YAML()
    yaml.preserve_quotes = True
    yaml.width = 4096  # never re-wrap a long line
    yaml.indent(mapping=2, sequence=4, offset=2)
    path = root / "dvc.yaml"
    pipeline = yaml.load(path.read_text())
    changed = []
    for name, body in stage_bodies(pipeline).items():
        script = SCRIPT.search(body["cmd"])
        if script is None:
            raise TunelabError(f"dvc.yaml: stage {name}: its cmd runs no stages/NAME.py")
        generated = code_deps(root / script.group(1), root)
        current = [dep for dep in body["deps"] if isinstance(dep, str) and dep.startswith(f"src/{PACKAGE}")]
        if current != generated:
            changed.append(name)
            with_code_deps(body["deps"], generated)
    if changed and not check:
        with path.open("w") as out:
            yaml.dump(pipeline, out)
    return changed
