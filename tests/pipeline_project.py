"""A real tunelab project for the end-to-end tests: git + DVC repo, tiny model, tiny data.

A tiny config (tiny random Llama, 60 synthetic reviews) keeps one pipeline run to a few minutes
on 2 cores. The suite runs it once, as the committed baseline (conftest's ``baseline``); each
end-to-end test works on its own copy (``baseline_copy``), so nothing reruns what the baseline
already proved.
"""

import json
import os
import shutil
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import yaml
from conftest import REPO_ROOT

PROJECT_FILES = ["dvc.yaml", ".dvcignore", "conf", "stages", "src/tunelab", "launch"]
DEPLOYED = ["evaluate_deployed@merged", "evaluate_deployed@int8_dynamic", "evaluate_deployed@qat"]
ALIGNMENT = ["preferences", "align", "evaluate@aligned"]  # align=none: each records that it was skipped
AFTER_TRAINING = [*ALIGNMENT, "quantize", *DEPLOYED, "benchmark", "load_test", "report"]
STAGES = ["base", "fetch", "prepare", "format", "train", "search_prompt", "evaluate@base", "evaluate@trained",
          *AFTER_TRAINING]
HEADLINE = "few_shot/choice"
WORDS = {"positive": ["moving", "funny", "wonderful", "sharp"], "negative": ["dull", "tedious", "awful", "limp"]}


DATA = "reviews.jsonl"  # in the repository, so each copy edits its own; check and fetch read it (DATA_READERS)
DATA_READERS = ("check", "fetch")


@dataclass(frozen=True)
class Baseline:
    repo: Path
    first_run: subprocess.CompletedProcess  # the `dvc exp run` that made it
    reads: Path  # the audit's records of what each stage process read


def tiny_reviews(path: Path, count: int = 60) -> Path:
    rows = []
    for i in range(count):
        label = "positive" if i % 2 else "negative"
        rows.append({"text": f"Review {i}: a {WORDS[label][i % 4]} film.", "label": label})
    path.write_text("".join(json.dumps(row) + "\n" for row in rows))
    return path


def run(repo: Path, *command: str, check: bool = True, env: dict | None = None) -> subprocess.CompletedProcess:
    env = {**os.environ, "PATH": f"{Path(sys.executable).parent}:{os.environ['PATH']}", "DVC_NO_ANALYTICS": "1",
           "MLFLOW_TRACKING_URI": f"sqlite:///{repo / 'mlflow.db'}", "GIT_AUTHOR_NAME": "t", "GIT_AUTHOR_EMAIL": "t@t",
           "GIT_COMMITTER_NAME": "t", "GIT_COMMITTER_EMAIL": "t@t",
           # sample system metrics every second: the tiny training ends before MLflow's default 10 s
           "MLFLOW_SYSTEM_METRICS_SAMPLING_INTERVAL": "1", "MLFLOW_SYSTEM_METRICS_SAMPLES_BEFORE_LOGGING": "1",
           **(env or {})}  # the caller's last: a test may point tracking elsewhere
    result = subprocess.run(command, cwd=repo, env=env, capture_output=True, text=True)
    if check and result.returncode != 0:
        raise AssertionError(f"{' '.join(command)} failed:\n{result.stdout[-3000:]}\n{result.stderr[-3000:]}")
    return result


def save_run(path: Path, result: subprocess.CompletedProcess) -> None:
    """A finished command kept on disk, for the test workers that did not run it."""
    path.write_text(json.dumps({"args": result.args, "returncode": result.returncode, "stdout": result.stdout,
                                "stderr": result.stderr}))


def load_run(path: Path) -> subprocess.CompletedProcess:
    return subprocess.CompletedProcess(**json.loads(path.read_text()))


def ran_stages(result: subprocess.CompletedProcess) -> list[str]:
    return [stage for stage in STAGES if f"Running stage '{stage}'" in result.stdout]


def replace_in(path: Path, old: str, new: str) -> None:
    text = path.read_text()
    assert old in text, f"{old!r} not in {path}"
    path.write_text(text.replace(old, new))


def make_project(tmp_path: Path, tiny_model_dir: Path) -> Path:
    """A git+DVC repo holding the project's pipeline, configured for the tiny model and data."""
    repo = tmp_path / "repo"
    repo.mkdir()
    for name in PROJECT_FILES:
        source, target = REPO_ROOT / name, repo / name
        if source.is_dir():
            shutil.copytree(source, target, ignore=shutil.ignore_patterns("__pycache__"))
        else:
            shutil.copy2(source, target)
    tiny_reviews(repo / DATA)
    (repo / "conf/model/tiny.yaml").write_text(f"# test\nname: tiny\nsource: local_dir\npath: {tiny_model_dir}\n")
    replace_in(repo / "conf/config.yaml", "model: smollm2_135m_instruct", "model: tiny")
    replace_in(repo / "conf/config.yaml", "data: vader_movie_reviews", "data: local_file")
    replace_in(repo / "conf/data/local_file.yaml", "path: ???", f"path: {DATA}")  # relative to the repository
    # movie reviews: asked as the default data is, so the baseline's prompts are the shipped sentiment ones
    replace_in(repo / "conf/data/local_file.yaml", "override /prompt: classification",
               "override /prompt: sentiment_instruction")
    replace_in(repo / "conf/data/local_file.yaml", "val_size: 200\n  test_size: 500", "val_size: 6\n  test_size: 12")
    replace_in(repo / "conf/config.yaml", "max_steps: 100", "max_steps: 20")
    replace_in(repo / "conf/config.yaml", "eval_steps: 50", "eval_steps: 10")
    replace_in(repo / "conf/eval/default.yaml", "max_new_tokens: 64", "max_new_tokens: 8")
    replace_in(repo / "conf/quantize/default.yaml", "variants: [merged, int8_dynamic]",
               "variants: [merged, int8_dynamic, qat]")  # qat does not apply to LoRA: skipped, with its reason
    replace_in(repo / "conf/bench/default.yaml", "batch_sizes: [1, 4, 16]\nnew_tokens: 32\nrepeats: 2",
               "batch_sizes: [1, 4]\nnew_tokens: 4\nrepeats: 1")
    # the headline is not the default one (first fine-tuned result): every stage that reads it is covered
    replace_in(repo / "conf/eval/default.yaml", "fine_tuned_prompting: [zero_shot]",
               "fine_tuned_prompting: [zero_shot, few_shot]")
    replace_in(repo / "conf/eval/default.yaml", "headline: null", f"headline: {HEADLINE}")
    (repo / ".gitignore").write_text("mlflow.db*\nmlruns/\nsweeps/\n")
    run(repo, "git", "init", "-q")
    run(repo, "dvc", "init", "-q")
    run(repo, "dvc", "config", "hydra.enabled", "true")
    run(repo, "git", "add", "-A")
    run(repo, "git", "commit", "-qm", "tiny project")
    return repo


NOT_RESULT_INPUTS = (".dvc", ".git", "src", "stages",  # code: tests/test_stage_dependencies.py checks it statically
                     "params.yaml",  # declared per key under params:
                     "dvc.yaml", "dvc.lock", ".dvcignore", ".gitignore",  # DVC's API, for the lineage tags
                     "mlflow.db", "mlruns", "checkpoints")  # tracking, resume state


def audited_env(folder: Path) -> dict:
    folder.mkdir(parents=True, exist_ok=True)
    return {"TUNELAB_AUDIT_READS": str(folder)}  # tests/hooks/read_audit.py, in each process the suite starts


def undeclared_reads(repo: Path, folder: Path, *data: str) -> dict[str, list[str]]:
    """What each stage's processes read that dvc.lock lists neither as its dependency nor its output
    (``data``: the local source files, which the check stage fingerprints; by default DATA)."""
    sources = set(data or (DATA,))
    lock = yaml.safe_load((repo / "dvc.lock").read_text())["stages"]
    declared = {name: [item["path"] for item in entry.get("deps", []) + entry.get("outs", [])]
                for name, entry in lock.items()}
    commands = {name: entry["cmd"].split(" ", 1)[1] for name, entry in lock.items()}  # without the launcher
    found: dict[str, set[str]] = {}
    for record in map(lambda path: json.loads(path.read_text()), folder.glob("*.json")):
        script = Path(record["argv"][0])
        if script.suffix != ".py":
            continue  # dvc itself, pip
        command = " ".join([os.path.relpath((repo / script).resolve(), repo.resolve()), *record["argv"][1:]])
        matches = [name for name, cmd in commands.items() if command == cmd or command.startswith(cmd + " ")]
        stage = max(matches, key=lambda name: len(commands[name]))  # evaluate.py base, not any evaluate.py
        for kind in ("opened", "listed"):
            for path in record[kind]:
                if Path(path).parts[0] in NOT_RESULT_INPUTS or ".tmp-" in path or "__pycache__" in path:
                    continue
                if path in sources and stage in DATA_READERS:  # a source, fingerprinted into data/origin.json
                    continue
                inside = any(path == dep or path.startswith(dep + "/") for dep in declared[stage])
                # listing a folder above an output: how atomic writes find a killed run's temporaries
                above = kind == "listed" and any(dep.startswith(path + "/") or path == "." for dep in declared[stage])
                if not (inside or above):
                    found.setdefault(stage, set()).add(f"{path} ({kind})")
    return {stage: sorted(paths) for stage, paths in found.items()}


def read_rows(path: Path) -> list[dict]:
    from tunelab.io.jsonl import read_jsonl

    return read_jsonl(path)  # as the stages read it: blank lines (an empty output's one) skipped


def pipeline_runs(repo: Path):
    import mlflow

    client = mlflow.MlflowClient(tracking_uri=f"sqlite:///{repo / 'mlflow.db'}")
    experiment = client.get_experiment_by_name("tunelab")
    runs = client.search_runs([experiment.experiment_id])
    parents = [r for r in runs if "tunelab.pipeline" in r.data.tags]
    children = [r for r in runs if "tunelab.stage" in r.data.tags]
    return parents, children




def copy_project(repo: Path, target: Path) -> Path:
    """Another checkout of ``repo`` with its outputs and DVC cache, and a fresh MLflow store."""
    shutil.copytree(repo, target, symlinks=True, ignore=shutil.ignore_patterns("mlflow.db*", "mlruns", "tmp"))
    return target


def compose_params(repo: Path, overrides: tuple[str, ...] = ()) -> None:
    """params.yaml as ``dvc exp run -S ...`` composes it from conf/, without running a stage."""
    from tunelab.config.compose import compose_conf

    (repo / "params.yaml").write_text(yaml.safe_dump(compose_conf(repo / "conf", list(overrides)), sort_keys=False))


def would_rerun(repo: Path, *overrides: str) -> list[str]:
    """The stages ``dvc exp run -S overrides`` would run, found without running them: those
    ``dvc status`` finds changed, and every stage downstream of one in DVC's own graph (their
    inputs are about to change). The check stage runs every time by design and is left out: its
    outputs change only with the sources (run it for real first when a source changed)."""
    import networkx
    from dvc.repo import Repo

    compose_params(repo, overrides)
    status = json.loads(run(repo, "dvc", "status", "--json").stdout or "{}")
    changed = {name for name, changes in status.items() if changes != ["always changed"]}
    with Repo(str(repo)) as dvc_repo:
        graph = dvc_repo.index.graph  # edges run from a stage to the stages whose outputs it reads
        by_name = {stage.name: stage for stage in graph}
        downstream = {later.name for name in changed for later in networkx.ancestors(graph, by_name[name])}
    return [stage for stage in STAGES if stage in changed | downstream]
