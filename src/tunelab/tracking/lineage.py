"""What a run was made from: git commit, the dvc.lock hashes of its data and models, the packages.

DVC writes dvc.lock after each stage it runs, so when a stage starts, the entries of the stages
upstream of it already hold the hashes of the data and models it is about to read.
"""

import os
import subprocess
from importlib.metadata import distributions
from pathlib import Path

import yaml

LOCK_FILE = Path("dvc.lock")
LOCK_TAG_PREFIX = "dvc.lock."


def git_commit() -> str | None:
    """HEAD of the workspace; in a queued experiment, its baseline commit."""
    result = subprocess.run(["git", "rev-parse", "HEAD"], capture_output=True, text=True)
    return result.stdout.strip() if result.returncode == 0 else None


def experiment_tags() -> dict[str, str]:
    """The DVC experiment a stage runs in (DVC sets these variables for `dvc exp run`)."""
    names = {"DVC_EXP_NAME": "dvc.exp_name", "DVC_EXP_BASELINE_REV": "dvc.baseline_rev"}
    return {tag: os.environ[variable] for variable, tag in names.items() if os.environ.get(variable)}


def _yaml(path: Path) -> dict:
    # libyaml's loader where PyYAML has it: every tracked stage reads dvc.yaml and dvc.lock at its start,
    # and the pure-Python loaders (PyYAML's, DVC's ruamel) spent seconds of each stage's start on them
    loader = getattr(yaml, "CSafeLoader", yaml.SafeLoader)
    return yaml.load(path.read_text(), Loader=loader) or {}


def _lock_stages(lock_file: Path) -> dict:
    return _yaml(lock_file).get("stages", {}) if lock_file.is_file() else {}


def _output_hashes(stages: dict) -> dict[str, str]:
    return {out["path"]: out["md5"] for entry in stages.values() for out in entry.get("outs", []) if out.get("md5")}


def stage_dependencies(stage: str) -> list[str]:
    """The paths ``stage`` depends on as dvc.yaml declares them, resolved by DVC's own resolver
    (foreach, ${} interpolation, params.yaml); none outside a DVC repository or for an unknown stage.

    DVC's resolver on dvc.yaml alone: ``repo.stage.collect`` would also parse dvc.lock with DVC's
    pure-Python YAML loader, ~1 s of every tracked stage's start for nothing used here.
    """
    from dvc.exceptions import DvcException
    from dvc.parsing import DataResolver
    from dvc.repo import Repo

    try:
        with Repo() as repo:
            definition = _yaml(Path(repo.root_dir) / "dvc.yaml")
            resolved = DataResolver(repo, repo.root_dir, definition).resolve_one(stage)
    except (DvcException, FileNotFoundError):
        return []
    return list(resolved[stage].get("deps", []))


def stage_input_hashes(stage: str, lock_file: Path = LOCK_FILE) -> dict[str, str]:
    """``{"dvc.lock.models/trained": md5}`` for each data or model input of ``stage``.

    Inputs are the stage's dependencies that another stage produces (so not source files); each
    hash is the producing stage's current entry in dvc.lock.
    """
    produced = _output_hashes(_lock_stages(lock_file))
    return {LOCK_TAG_PREFIX + path: produced[path] for path in stage_dependencies(stage) if path in produced}


def lineage_tags(hashes: dict[str, str]) -> dict[str, str]:
    """``{"dvc.lock.models/trained": md5}`` for the data and model paths among ``{path: md5}``."""
    return {LOCK_TAG_PREFIX + path: md5 for path, md5 in hashes.items() if path.startswith(("data/", "models/"))}


def output_hashes(lock_file: Path = LOCK_FILE) -> dict[str, str]:
    """``{path: md5}`` of every output dvc.lock records."""
    return _output_hashes(_lock_stages(lock_file))


def pipeline_output_hashes(lock_file: Path = LOCK_FILE) -> dict[str, str]:
    """Every data and model output in dvc.lock: the lineage of a whole pipeline run."""
    return lineage_tags(output_hashes(lock_file))


def pip_freeze() -> str:
    """``name==version`` of every installed distribution, as ``pip freeze`` lists them."""
    pins = {f"{d.metadata['Name']}=={d.version}" for d in distributions() if d.metadata["Name"]}
    return "".join(f"{pin}\n" for pin in sorted(pins, key=str.lower))
