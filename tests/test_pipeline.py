"""The pipeline for real: DVC in a git repo, Hydra composition, MLflow's sqlite store."""

import json
import subprocess
import sys
from importlib.metadata import version
from pathlib import Path

import mlflow
import pytest
import yaml

from conftest import REPO_ROOT
from pipeline_project import (AFTER_TRAINING, STAGES, audited_env, pipeline_runs, ran_stages, read_rows,
                              replace_in, run, undeclared_reads)

@pytest.mark.slow
def test_dvc_pipeline_end_to_end(project, tmp_path):
    reads = tmp_path / "reads"  # what every stage process opened: dvc.yaml must declare each one
    first = run(project, "dvc", "exp", "run", env=audited_env(reads))
    assert ran_stages(first) == STAGES and "Running stage 'check'" in first.stdout
    assert undeclared_reads(project, reads) == {}

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
    assert "| variant | strategy | scoring | accuracy [95% CI]" in first.stdout  # the run ends with the tables
    assert "| trained | lora | zero_shot (sentiment_instruction) | none | choice |" in report_text  # with its costs
    assert "![accuracy vs train time](report/accuracy_vs_train_time.png)" in report_text
    assert (project / "metrics/report/accuracy_vs_latency.png").stat().st_size > 10_000
    train_seconds = json.loads((project / "metrics/train.json").read_text())["train_seconds"]
    headline = json.loads((project / "metrics/eval.json").read_text())["trained/zero_shot/choice"]
    assert headline["train_seconds"] == train_seconds and headline["tokens_per_second"] > 0
    shown = run(project, "dvc", "metrics", "show", "--json")
    assert "base/zero_shot/choice" in shown.stdout

    parents, children = pipeline_runs(project)
    assert len(parents) == 1 and parents[0].data.params["data.test_size"] == "12"
    assert sorted(r.data.tags["tunelab.stage"] for r in children) == sorted(STAGES)
    skipped = next(r for r in children if r.data.tags["tunelab.stage"] == "evaluate_deployed@qat")
    assert "it applies to strategy=qat" in skipped.data.tags["tunelab.skipped"]
    assert {r.data.tags["mlflow.parentRunId"] for r in children} == {parents[0].info.run_id}
    assert {r.info.status for r in children + parents} == {"FINISHED"}
    commit = run(project, "git", "rev-parse", "HEAD").stdout.strip()
    assert {r.data.tags["mlflow.source.git.commit"] for r in children + parents} == {commit}
    lock = yaml.safe_load((project / "dvc.lock").read_text())["stages"]
    trained_hash = next(o["md5"] for o in lock["train"]["outs"] if o["path"] == "models/trained")
    scored = next(r for r in children if r.data.tags["tunelab.stage"] == "evaluate@trained")
    assert scored.data.tags["dvc.lock.models/trained"] == trained_hash  # the model it scored
    assert parents[0].data.tags["dvc.lock.models/trained"] == trained_hash  # the pipeline's lineage
    assert parents[0].data.metrics["accuracy"] == headline["accuracy"]
    client = mlflow.MlflowClient(tracking_uri=f"sqlite:///{project / 'mlflow.db'}")
    assert {"params.yaml", "pip-freeze.txt"} <= {a.path for a in client.list_artifacts(scored.info.run_id)}
    train_run = next(r for r in children if r.data.tags["tunelab.stage"] == "train")
    assert {"loss", "tokens_per_second", "mfu", "peak_memory_mb", "val_loss_after"} <= set(train_run.data.metrics)
    assert any(key.startswith("system/cpu") for key in train_run.data.metrics)
    prepare_run = next(r for r in children if r.data.tags["tunelab.stage"] == "prepare")
    assert prepare_run.data.metrics["test_examples"] == 12
    eval_run = next(r for r in children if r.data.tags["tunelab.stage"] == "evaluate@base")
    assert 0 <= eval_run.data.metrics["few_shot.choice.accuracy"] <= 1

    # Nothing changed: only the check stage runs (it always does, in a second); every other stage is cached.
    second = run(project, "dvc", "repro")
    assert ran_stages(second) == [] and "Running stage 'check'" in second.stdout
    assert "Stage 'fetch' didn't change, skipping" in second.stdout

    # An edit in conf/ reaches the stages through dvc exp run; only the stages downstream of it rerun.
    replace_in(project / "conf/prompt/sentiment_instruction.yaml", "Answer with one word.", "Reply in one word.")
    edited = run(project, "dvc", "exp", "run")
    assert ran_stages(edited) == ["format", "train", "evaluate@base", "evaluate@trained", *AFTER_TRAINING]
    assert "Reply in one word." in read_rows(project / "data/formatted/train.jsonl")[0]["prompt"]

    # Retraining re-scores the trained model only: the prompting baselines stay cached.
    retrained = run(project, "dvc", "exp", "run", "-S", "train.max_steps=10")
    assert ran_stages(retrained) == ["train", "evaluate@trained", *AFTER_TRAINING]

    # An in-place edit of the local data file (same path, same params) is seen: fetch reruns. And a
    # headline other than zero-shot/choice runs through every stage that reads it (the benchmark
    # once crashed on it).
    reviews = project.parent / "reviews.jsonl"
    reviews.write_text(reviews.read_text() + '{"text": "Review 60: a sharp film.", "label": "positive"}\n')
    overridden = run(project, "dvc", "exp", "run", "-S", "data.test_size=10", "-S", "eval.fine_tuned_strategies=[few_shot]")
    assert ran_stages(overridden) == ["fetch", "prepare", "format", "train", "evaluate@base", "evaluate@trained",
                                      *AFTER_TRAINING]
    assert len(read_rows(project / "data/formatted/test.jsonl")) == 10
    assert "Review 60: a sharp film." in (project / "data/raw/reviews.jsonl").read_text()
    parents, _ = pipeline_runs(project)
    assert len(parents) == 4  # one parent per configuration
    evaluated = json.loads((project / "metrics/eval.json").read_text())
    assert "trained/zero_shot/choice" not in evaluated
    tradeoffs = (project / "metrics/report/tradeoffs.csv").read_text().splitlines()
    assert tradeoffs[0] == "variant,accuracy,token_latency_p50_ms,tokens_per_second_batch1,size_mb"
    assert tradeoffs[1].startswith(f"trained,{evaluated['trained/few_shot/choice']['accuracy']},")
    assert "accuracy of few_shot/choice" in (project / "metrics/report.md").read_text()
    latest = max(parents, key=lambda r: r.info.start_time)
    assert latest.data.metrics["accuracy"] == evaluated["trained/few_shot/choice"]["accuracy"]

    # A config value that reaches a shell command is refused before any shell runs it.
    refused = run(project, "dvc", "exp", "run", "-S", "train.launcher='python; touch pwned #'", check=False)
    assert refused.returncode != 0 and not (project / "pwned").exists()
    assert "error: config key train.launcher: 'python; touch pwned #' is not a launcher tunelab runs" in refused.stderr
    assert ran_stages(refused) == []


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
