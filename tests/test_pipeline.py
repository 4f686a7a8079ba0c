"""The pipeline for real: DVC in a git repo, Hydra composition, MLflow's sqlite store.

A tiny config (tiny random Llama, 60 synthetic reviews) keeps it to about a minute on 2 cores.
"""

import json
import os
import shutil
import subprocess
import sys
from importlib.metadata import version
from pathlib import Path

import pytest

from conftest import REPO_ROOT

PROJECT_FILES = ["dvc.yaml", ".dvcignore", "conf", "stages", "src/tunelab"]
DEPLOYED = ["evaluate_deployed@merged", "evaluate_deployed@int8_dynamic", "evaluate_deployed@qat"]
AFTER_TRAINING = ["quantize", *DEPLOYED, "benchmark", "report"]
STAGES = ["base", "fetch", "prepare", "format", "train", "evaluate@base", "evaluate@trained", *AFTER_TRAINING]
WORDS = {"positive": ["moving", "funny", "wonderful", "sharp"], "negative": ["dull", "tedious", "awful", "limp"]}


def tiny_reviews(path: Path, count: int = 60) -> Path:
    rows = []
    for i in range(count):
        label = "positive" if i % 2 else "negative"
        rows.append({"text": f"Review {i}: a {WORDS[label][i % 4]} film.", "label": label})
    path.write_text("".join(json.dumps(row) + "\n" for row in rows))
    return path


def run(repo: Path, *command: str, check: bool = True) -> subprocess.CompletedProcess:
    env = {**os.environ, "PATH": f"{Path(sys.executable).parent}:{os.environ['PATH']}", "DVC_NO_ANALYTICS": "1",
           "MLFLOW_TRACKING_URI": f"sqlite:///{repo / 'mlflow.db'}", "GIT_AUTHOR_NAME": "t", "GIT_AUTHOR_EMAIL": "t@t",
           "GIT_COMMITTER_NAME": "t", "GIT_COMMITTER_EMAIL": "t@t",
           # sample system metrics every second: the tiny training ends before MLflow's default 10 s
           "MLFLOW_SYSTEM_METRICS_SAMPLING_INTERVAL": "1", "MLFLOW_SYSTEM_METRICS_SAMPLES_BEFORE_LOGGING": "1"}
    result = subprocess.run(command, cwd=repo, env=env, capture_output=True, text=True)
    if check and result.returncode != 0:
        raise AssertionError(f"{' '.join(command)} failed:\n{result.stdout[-3000:]}\n{result.stderr[-3000:]}")
    return result


def ran_stages(result: subprocess.CompletedProcess) -> list[str]:
    return [stage for stage in STAGES if f"Running stage '{stage}'" in result.stdout]


def replace_in(path: Path, old: str, new: str) -> None:
    text = path.read_text()
    assert old in text, f"{old!r} not in {path}"
    path.write_text(text.replace(old, new))


@pytest.fixture
def project(tmp_path, tiny_model_dir) -> Path:
    """A git+DVC repo holding the project's pipeline, configured for the tiny model and data."""
    repo = tmp_path / "repo"
    repo.mkdir()
    for name in PROJECT_FILES:
        source, target = REPO_ROOT / name, repo / name
        if source.is_dir():
            shutil.copytree(source, target, ignore=shutil.ignore_patterns("__pycache__"))
        else:
            shutil.copy2(source, target)
    reviews = tiny_reviews(tmp_path / "reviews.jsonl")
    (repo / "conf/model/tiny.yaml").write_text(f"# test\nname: tiny\nsource: local_dir\npath: {tiny_model_dir}\n")
    replace_in(repo / "conf/config.yaml", "model: smollm2_135m_instruct", "model: tiny")
    replace_in(repo / "conf/config.yaml", "data: vader_movie_reviews", "data: local_file")
    replace_in(repo / "conf/data/local_file.yaml", "path: ???", f"path: {reviews}")
    replace_in(repo / "conf/data/local_file.yaml", "val_size: 200\ntest_size: 500", "val_size: 6\ntest_size: 12")
    replace_in(repo / "conf/config.yaml", "max_steps: 100", "max_steps: 20")
    replace_in(repo / "conf/config.yaml", "eval_steps: 25", "eval_steps: 10")
    replace_in(repo / "conf/eval/default.yaml", "max_new_tokens: 64", "max_new_tokens: 8")
    replace_in(repo / "conf/quantize/default.yaml", "variants: [merged, int8_dynamic, nf4]",
               "variants: [merged, int8_dynamic, qat]")  # qat does not apply to LoRA: skipped, with its reason
    replace_in(repo / "conf/bench/default.yaml", "batch_sizes: [1, 4, 16]\nnew_tokens: 32\nrepeats: 2",
               "batch_sizes: [1, 4]\nnew_tokens: 4\nrepeats: 1")
    (repo / ".gitignore").write_text("mlflow.db\nmlruns/\n")
    run(repo, "git", "init", "-q")
    run(repo, "dvc", "init", "-q")
    run(repo, "dvc", "config", "hydra.enabled", "true")
    run(repo, "git", "add", "-A")
    run(repo, "git", "commit", "-qm", "tiny project")
    return repo


def read_rows(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines()]


def pipeline_runs(repo: Path):
    import mlflow

    client = mlflow.MlflowClient(tracking_uri=f"sqlite:///{repo / 'mlflow.db'}")
    experiment = client.get_experiment_by_name("tunelab")
    runs = client.search_runs([experiment.experiment_id])
    parents = [r for r in runs if "tunelab.pipeline" in r.data.tags]
    children = [r for r in runs if "tunelab.stage" in r.data.tags]
    return parents, children


@pytest.mark.slow
def test_dvc_pipeline_end_to_end(project):
    first = run(project, "dvc", "exp", "run")
    assert ran_stages(first) == STAGES

    stats = json.loads((project / "data/prepared/stats.json").read_text())
    assert stats["split_sizes"] == {"train": 42, "val": 6, "test": 12}
    assert stats["overlap"] == {"train/val": 0, "train/test": 0, "val/test": 0}
    assert (project / "models/base/model.safetensors").is_file()
    formatted = read_rows(project / "data/formatted/test.jsonl")
    assert len(formatted) == 12
    assert formatted[0]["prompt"].startswith("<|im_start|>user\nIs the sentiment of this movie review")
    assert formatted[0]["completion"] == f"{formatted[0]['label']}<|im_end|>"
    report = json.loads((project / "data/formatted/report.json").read_text())
    assert report["splits"]["train"]["eos_at_end_share"] == 1.0
    trained = json.loads((project / "metrics/train.json").read_text())
    assert trained["strategy"] == "lora" and trained["steps"] == 20
    assert trained["val_loss_after"] < trained["val_loss_before"]
    assert (project / "models/trained/adapter_model.safetensors").is_file()
    assert (project / "metrics/train/loss.csv").read_text().startswith("step,loss\n")

    evaluated = json.loads((project / "metrics/eval.json").read_text())
    assert {"base/zero_shot/choice", "base/few_shot/choice", "base/self_consistency/generate",
            "trained/zero_shot/choice", "trained/zero_shot/generate"} <= set(evaluated)
    assert evaluated["trained/zero_shot/choice"]["examples"] == 12
    # merging is exact, so the merged variant answers as the trained one did
    assert evaluated["merged/zero_shot/choice"]["accuracy"] == evaluated["trained/zero_shot/choice"]["accuracy"]
    assert "int8_dynamic/zero_shot/generate" in evaluated
    quantized = json.loads((project / "metrics/quantize.json").read_text())["variants"]
    assert quantized["qat"] == {"status": "skipped", "reason": "qat converts QAT-trained weights: it applies to "
                                "strategy=qat, this model was trained with lora"}
    bench = json.loads((project / "metrics/bench.json").read_text())
    assert list(bench["variants"]) == ["trained", "merged", "int8_dynamic"]
    assert set(bench["variants"]["int8_dynamic"]["tokens_per_second"]) == {"1", "4"}
    assert bench["environment"]["torch"] == version("torch")
    report_text = (project / "metrics/report.md").read_text()
    assert "- `qat`: skipped — qat converts QAT-trained weights" in report_text
    assert "| int8_dynamic |" in report_text.split("## Deployable variants")[1]
    assert "| trained | zero_shot | choice |" in (project / "metrics/report.md").read_text()
    assert "| variant | strategy | scoring | accuracy [95% CI]" in first.stdout  # the run ends with the table
    shown = run(project, "dvc", "metrics", "show", "--json")
    assert "base/zero_shot/choice" in shown.stdout

    parents, children = pipeline_runs(project)
    assert len(parents) == 1 and parents[0].data.params["data.test_size"] == "12"
    assert sorted(r.data.tags["tunelab.stage"] for r in children) == sorted(STAGES)
    skipped = next(r for r in children if r.data.tags["tunelab.stage"] == "evaluate_deployed@qat")
    assert "it applies to strategy=qat" in skipped.data.tags["tunelab.skipped"]
    assert {r.data.tags["mlflow.parentRunId"] for r in children} == {parents[0].info.run_id}
    assert {r.info.status for r in children + parents} == {"FINISHED"}
    train_run = next(r for r in children if r.data.tags["tunelab.stage"] == "train")
    assert {"loss", "tokens_per_second", "mfu", "peak_memory_mb", "val_loss_after"} <= set(train_run.data.metrics)
    assert any(key.startswith("system/cpu") for key in train_run.data.metrics)
    prepare_run = next(r for r in children if r.data.tags["tunelab.stage"] == "prepare")
    assert prepare_run.data.metrics["test_examples"] == 12
    eval_run = next(r for r in children if r.data.tags["tunelab.stage"] == "evaluate@base")
    assert 0 <= eval_run.data.metrics["few_shot.choice.accuracy"] <= 1

    second = run(project, "dvc", "repro")
    assert ran_stages(second) == [] and "Data and pipelines are up to date" in second.stdout

    # An edit in conf/ reaches the stages through dvc exp run; only the stages downstream of it rerun.
    replace_in(project / "conf/prompt/sentiment_instruction.yaml", "Answer with one word.", "Reply in one word.")
    edited = run(project, "dvc", "exp", "run")
    assert ran_stages(edited) == ["format", "train", "evaluate@base", "evaluate@trained", *AFTER_TRAINING]
    assert "Reply in one word." in read_rows(project / "data/formatted/train.jsonl")[0]["prompt"]

    # Retraining re-scores the trained model only: the prompting baselines stay cached.
    retrained = run(project, "dvc", "exp", "run", "-S", "train.max_steps=10")
    assert ran_stages(retrained) == ["train", "evaluate@trained", *AFTER_TRAINING]

    overridden = run(project, "dvc", "exp", "run", "-S", "data.test_size=10")
    assert ran_stages(overridden) == ["prepare", "format", "train", "evaluate@base", "evaluate@trained", *AFTER_TRAINING]
    assert len(read_rows(project / "data/formatted/test.jsonl")) == 10
    assert len(pipeline_runs(project)[0]) == 4  # one parent per configuration


@pytest.mark.slow
def test_bare_dvc_repro_refuses_a_params_yaml_that_conf_no_longer_composes_to(project):
    run(project, "dvc", "exp", "run")
    replace_in(project / "conf/config.yaml", "max_length: 128", "max_length: 64")
    (project / "stages/format.py").write_text((project / "stages/format.py").read_text() + "\n")  # format must rerun
    stale = run(project, "dvc", "repro", check=False)
    assert stale.returncode != 0
    assert "params.yaml is not what conf/ composes to (first difference: format.max_length)" in stale.stderr


def test_a_stage_fails_in_one_line_naming_file_and_line_and_writes_nothing(tmp_path):
    (tmp_path / "data/raw").mkdir(parents=True)
    (tmp_path / "data/raw/truth.txt").write_text("1\t2.0\tGood\n2\toops\n")
    (tmp_path / "data/raw/source.json").write_text('{"file": "truth.txt"}')
    data = (REPO_ROOT / "conf/data/vader_movie_reviews.yaml").read_text()
    (tmp_path / "params.yaml").write_text("data:\n" + "".join(f"  {line}\n" for line in data.splitlines())
                                          + "tracking:\n  enabled: false\n")
    result = subprocess.run([sys.executable, str(REPO_ROOT / "stages/prepare.py")], cwd=tmp_path,
                            capture_output=True, text=True)
    assert result.returncode == 2
    assert result.stderr.strip() == (
        f"error: {Path('data/raw/truth.txt')}:2: expected 3 tab-separated fields (id, rating, text), got 2")
    assert not (tmp_path / "data/prepared").exists()
