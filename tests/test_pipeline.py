"""The pipeline for real: DVC in a git repo, Hydra composition, MLflow's sqlite store.

The assertions on the first run read the session's committed baseline (conftest); what a
change reruns is found with ``dvc status`` and DVC's graph on a copy of it, and only the
stages whose outputs a test reads are run again.
"""

import json
import subprocess
import sys
from importlib.metadata import version
from pathlib import Path

import mlflow
import pytest
import yaml
from conftest import REPO_ROOT
from pipeline_project import (
    AFTER_TRAINING,
    ALIGNMENT,
    DATA,
    HEADLINE,
    STAGES,
    WORDS,
    audited_env,
    pipeline_runs,
    ran_stages,
    read_rows,
    replace_in,
    run,
    undeclared_reads,
    would_rerun,
)


@pytest.mark.slow
def test_the_first_run_runs_every_stage_and_reads_only_what_dvc_yaml_declares(baseline):
    assert ran_stages(baseline.first_run) == STAGES and "Running stage 'check'" in baseline.first_run.stdout
    assert undeclared_reads(baseline.repo, baseline.reads) == {}
    assert "| variant | prompting | scoring | accuracy [95% CI]" in baseline.first_run.stdout  # it ends with the tables


@pytest.mark.slow
def test_the_first_run_prints_no_known_third_party_noise(baseline):
    console = baseline.first_run.stdout + baseline.first_run.stderr
    # torchao/bitsandbytes, torch's deprecations, kineto's USDT probe markers and the CPU allocator's
    # note of the profiled training, and DVC's warning of an empty output (a skipped stage's)
    for noise in ("Failed to load", "is an Enum subclass", "FutureWarning", "USDT:", "CPUAllocator", "is empty"):
        assert noise not in console, noise


@pytest.mark.slow
def test_data_is_split_without_overlap_and_formatted_through_the_chat_template(baseline):
    project = baseline.repo
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
    assert report["splits"]["train"]["dropped_truncated"] == 0 and "dropped_truncated" not in report["splits"]["test"]


@pytest.mark.slow
def test_training_lowers_the_val_loss_and_saves_an_adapter(baseline):
    project = baseline.repo
    trained = json.loads((project / "metrics/train.json").read_text())
    assert trained["strategy"] == "lora" and trained["steps"] == 20
    assert trained["val_loss_after"] < trained["val_loss_before"]
    assert (project / "models/trained/adapter_model.safetensors").is_file()
    assert (project / "metrics/train/loss.csv").read_text().startswith("step,loss\n")


@pytest.mark.slow
def test_every_variant_is_scored_quantized_benchmarked_and_reported(baseline):
    project = baseline.repo
    evaluated = json.loads((project / "metrics/eval.json").read_text())
    assert {"base/zero_shot/choice", "base/few_shot/choice", "base/self_consistency/generate",
            "trained/zero_shot/choice", "trained/zero_shot/generate", "trained/few_shot/choice"} <= set(evaluated)
    assert evaluated["trained/zero_shot/choice"]["examples"] == 12
    # merging is exact, so the merged variant answers as the trained one did
    assert evaluated["merged/zero_shot/choice"]["accuracy"] == evaluated["trained/zero_shot/choice"]["accuracy"]
    assert "int8_dynamic/zero_shot/generate" in evaluated
    quantized = json.loads((project / "metrics/quantize.json").read_text())["variants"]
    assert quantized["qat"] == {"status": "skipped", "reason": "qat converts QAT-trained weights: it applies to "
                                "strategy=qat, this model was trained with lora"}
    bench = json.loads((project / "metrics/bench.json").read_text())
    assert list(bench["variants"]) == ["trained", "merged", "int8_dynamic"]
    bars = baseline.first_run.stdout.splitlines()  # text mode: tqdm's "\r" redraws are lines
    for variant in bench["variants"]:  # its timed runs under a progress bar: 1 repeat × (latency, which is batch 1; batch 4)
        assert any(bar.startswith(f"benchmark: {variant}: 100%|") and "| 2/2 [" in bar for bar in bars), variant
    assert set(bench["variants"]["int8_dynamic"]["tokens_per_second"]) == {"1", "4"}
    assert bench["environment"]["torch"] == version("torch")
    from tunelab.benchmarking.environment import ISA_FLAGS

    isa, engine = bench["environment"]["cpu_isa"], bench["environment"]["quantized_engine"]
    assert set(isa) <= set(ISA_FLAGS) and engine
    report_text = (project / "metrics/report.md").read_text()
    # the instruction set beside the recommendation: int8's scores and every speed depend on it
    recommendation = report_text.split("\n\nEvery model variant")[0]
    assert f"({', '.join(isa) or 'no AVX2'}; PyTorch quantized engine {engine})" in recommendation
    assert "- `qat`: skipped — qat converts QAT-trained weights" in report_text
    assert "- `aligned`: skipped — align=none (dvc exp run -S align=dpo, or kto, orpo, grpo, rloo" in report_text
    assert "| int8_dynamic |" in report_text.split("## Deployable variants")[1]
    assert "| trained | zero_shot | choice |" in report_text
    assert "| trained | lora | zero_shot (sentiment_instruction) | none | choice |" in report_text  # with its costs
    assert "![score vs train time](report/score_vs_train_time.png)" in report_text
    # every row against the best, row by row, and one sentence to act on first
    assert report_text.startswith("# tunelab report\n\n**Recommendation: `")
    assert "## Against the best, row by row" in report_text and "| McNemar exact (conditional) |" in report_text
    verdicts = [figures["vs_best"] for figures in evaluated.values()]
    assert verdicts.count("best") == 1 and set(verdicts) <= {"best", "non-inferior", "inconclusive", "worse"}
    assert (project / "metrics/report/score_vs_latency.png").stat().st_size > 10_000
    train_seconds = json.loads((project / "metrics/train.json").read_text())["train_seconds"]
    scored = evaluated["trained/zero_shot/choice"]
    assert scored["train_seconds"] == train_seconds and scored["tokens_per_second"] > 0
    shown = run(project, "dvc", "metrics", "show", "--json")
    assert "base/zero_shot/choice" in shown.stdout


@pytest.mark.slow
def test_a_headline_other_than_the_default_reaches_every_stage_that_reads_it(baseline):
    """eval.headline=few_shot/choice (the baseline's): the benchmark once crashed on a non-default one."""
    project = baseline.repo
    evaluated = json.loads((project / "metrics/eval.json").read_text())
    tradeoffs = (project / "metrics/report/tradeoffs.csv").read_text().splitlines()
    assert tradeoffs[0] == "variant,metric,score,token_latency_p50_ms,tokens_per_second_batch1,size_mb"
    assert tradeoffs[1].startswith(f"trained,accuracy,{evaluated['trained/few_shot/choice']['accuracy']},")
    assert f"accuracy of {HEADLINE}" in (project / "metrics/report.md").read_text()
    parents, _ = pipeline_runs(project)
    assert parents[0].data.metrics["accuracy"] == evaluated["trained/few_shot/choice"]["accuracy"]


@pytest.mark.slow
def test_mlflow_holds_one_pipeline_run_over_a_run_per_stage_with_their_lineage(baseline):
    project = baseline.repo
    parents, children = pipeline_runs(project)
    assert len(parents) == 1 and parents[0].data.params["data.test_size"] == "12"
    assert sorted(r.data.tags["tunelab.stage"] for r in children) == sorted(STAGES)
    skipped = next(r for r in children if r.data.tags["tunelab.stage"] == "evaluate_deployed@qat")
    assert "it applies to strategy=qat" in skipped.data.tags["tunelab.skipped"]
    assert {r.data.tags["mlflow.parentRunId"] for r in children} == {parents[0].info.run_id}
    assert {r.info.status for r in children + parents} == {"FINISHED"}
    first_commit = run(project, "git", "rev-list", "--max-parents=0", "HEAD").stdout.strip()  # the run's commit
    assert {r.data.tags["mlflow.source.git.commit"] for r in children + parents} == {first_commit}
    lock = yaml.safe_load((project / "dvc.lock").read_text())["stages"]
    trained_hash = next(o["md5"] for o in lock["train"]["outs"] if o["path"] == "models/trained")
    scored = next(r for r in children if r.data.tags["tunelab.stage"] == "evaluate@trained")
    assert scored.data.tags["dvc.lock.models/trained"] == trained_hash  # the model it scored
    assert parents[0].data.tags["dvc.lock.models/trained"] == trained_hash  # the pipeline's lineage
    client = mlflow.MlflowClient(tracking_uri=f"sqlite:///{project / 'mlflow.db'}")
    assert {"params.yaml", "pip-freeze.txt"} <= {a.path for a in client.list_artifacts(scored.info.run_id)}
    train_run = next(r for r in children if r.data.tags["tunelab.stage"] == "train")
    assert {"loss", "tokens_per_second", "mfu", "peak_memory_mb", "val_loss_after"} <= set(train_run.data.metrics)
    assert any(key.startswith("system/cpu") for key in train_run.data.metrics)
    prepare_run = next(r for r in children if r.data.tags["tunelab.stage"] == "prepare")
    assert prepare_run.data.metrics["test_examples"] == 12
    eval_run = next(r for r in children if r.data.tags["tunelab.stage"] == "evaluate@base")
    base_scores = json.loads((project / "metrics/eval.json").read_text())
    assert eval_run.data.metrics["few_shot.choice.accuracy"] == base_scores["base/few_shot/choice"]["accuracy"]


@pytest.mark.slow
def test_with_nothing_changed_only_the_check_stage_runs(baseline_copy):
    second = run(baseline_copy, "dvc", "repro")
    assert ran_stages(second) == [] and "Running stage 'check'" in second.stdout
    assert "Stage 'fetch' didn't change, skipping" in second.stdout


@pytest.mark.slow
@pytest.mark.reruns_stages
def test_a_conf_edit_reaches_the_stages_downstream_of_it_and_no_others(baseline_copy):
    project = baseline_copy
    replace_in(project / "conf/prompt/sentiment_instruction.yaml", "Answer with one word.", "Reply in one word.")
    assert would_rerun(project) == ["format", "train", "search_prompt", "evaluate@base", "evaluate@trained",
                                    *AFTER_TRAINING]
    run(project, "dvc", "exp", "run", "format")  # composes conf/ and runs up to the format stage
    assert "Reply in one word." in read_rows(project / "data/formatted/train.jsonl")[0]["prompt"]


@pytest.mark.slow
def test_retraining_rescores_the_trained_model_only(baseline_copy):
    """The prompting baselines (evaluate@base) stay cached."""
    assert would_rerun(baseline_copy, "train.max_steps=10") == ["train", "evaluate@trained", *AFTER_TRAINING]


@pytest.mark.slow
def test_an_edited_launch_config_reruns_training_and_the_trained_models_stages(baseline_copy):
    """launch/ holds accelerate's config files: another sharding is another training run."""
    config = baseline_copy / "launch/fsdp.yaml"
    config.write_text(config.read_text().replace("fsdp_reshard_after_forward: true", "fsdp_reshard_after_forward: false"))
    assert would_rerun(baseline_copy) == ["train", "evaluate@trained", *AFTER_TRAINING]


@pytest.mark.slow
@pytest.mark.reruns_stages
def test_an_in_place_edit_of_the_local_data_file_reruns_everything_from_fetch(baseline_copy):
    """Same path, same params: the check stage's fingerprint of the source is what changes."""
    project = baseline_copy
    (project / DATA).write_text((project / DATA).read_text() + '{"text": "Review 60: a sharp film.", "label": "positive"}\n')
    assert would_rerun(project) == []  # nothing can see the edit before the check stage fingerprints it
    run(project, "dvc", "repro", "check")
    assert would_rerun(project, "data.test_size=10") == [
        "fetch", "prepare", "format", "train", "search_prompt", "evaluate@base", "evaluate@trained", *AFTER_TRAINING]
    run(project, "dvc", "exp", "run", "-S", "data.test_size=10", "-S", "tracking.enabled=false", "format")
    assert len(read_rows(project / "data/formatted/test.jsonl")) == 10
    assert "Review 60: a sharp film." in (project / "data/raw/main/reviews.jsonl").read_text()


@pytest.mark.slow
def test_a_config_value_that_reaches_a_shell_command_is_refused_before_any_shell_runs_it(baseline_copy):
    project = baseline_copy
    refused = run(project, "dvc", "exp", "run", "-S", "train.launcher='python; touch pwned #'", check=False)
    assert refused.returncode != 0 and not (project / "pwned").exists()
    assert "error: config key train.launcher: 'python; touch pwned #' is not a launcher tunelab runs" in refused.stderr
    assert ran_stages(refused) == []


@pytest.mark.slow
def test_bare_dvc_repro_refuses_a_params_yaml_that_conf_no_longer_composes_to(baseline_copy):
    project = baseline_copy
    replace_in(project / "conf/config.yaml", "max_length: 128", "max_length: 64")
    (project / "stages/format.py").write_text((project / "stages/format.py").read_text() + "\n")  # format must rerun
    stale = run(project, "dvc", "repro", check=False)
    assert stale.returncode != 0
    assert "params.yaml is not what conf/ composes to (first difference: format.max_length)" in stale.stderr


def test_a_stage_fails_in_one_line_naming_file_and_line_and_writes_nothing(tmp_path):
    (tmp_path / "data/raw/main").mkdir(parents=True)
    (tmp_path / "data/raw/main/truth.txt").write_text("1\t2.0\tGood\n2\toops\n")
    (tmp_path / "data/raw/source.json").write_text('{"file": "truth.txt"}')
    data = (REPO_ROOT / "conf/data/vader_movie_reviews.yaml").read_text()
    tracking = (REPO_ROOT / "conf/tracking/mlflow_local.yaml").read_text().replace("enabled: true", "enabled: false")
    (tmp_path / "params.yaml").write_text("".join(f"{name}:\n" + "".join(f"  {line}\n" for line in section.splitlines())
                                                  for name, section in (("data", data), ("tracking", tracking))))
    result = subprocess.run([sys.executable, str(REPO_ROOT / "stages/prepare.py")], cwd=tmp_path,
                            capture_output=True, text=True)
    assert result.returncode == 2
    assert result.stderr.strip() == (
        f"error: {Path('data/raw/main/truth.txt')}:2: expected 3 tab-separated fields (id, rating, text), got 2")
    assert not (tmp_path / "data/prepared").exists()


CHATS, TRAIN_CHATS, OTHER_CHATS = "chats.jsonl", "train_chats.jsonl", "other_chats.jsonl"
GENERATIVE_RUN = ["-S", "data=local_chat", "-S", f"data.source.path={CHATS}", "-S", "data.test_size=6", "-S",
                  # the train split from a source of its own, and an extra test set: their paths through DVC
                  f"data.train_source={{kind: local_file, path: {TRAIN_CHATS}}}",
                  "-S", f"+eval.extra_test_sets.other={{source: {{kind: local_file, path: {OTHER_CHATS}}}, size: 3}}",
                  "-S",
                  "data.val_size=4", "-S", "eval.limit=4", "-S", "eval.prompting.self_consistency.samples=2",
                  "-S", "quantize.variants=[merged]",
                  *[arg for m in ("zero_shot", "few_shot", "role", "chain_of_thought", "self_consistency", "optimized")
                    for arg in ("-S", f"eval.prompting.{m}.max_new_tokens=6")]]


def write_chats(path: Path, count: int = 30, start: int = 0) -> None:
    """Chats of one or two exchanges, every third with a system message."""
    rows = []
    for i in range(start, start + count):
        turns = [{"role": "user", "content": f"Say {WORDS['positive'][i % 4]} {i}."},
                 {"role": "assistant", "content": f"{WORDS['positive'][i % 4]} {i}"}]
        if i % 3 == 0:
            turns = [{"role": "system", "content": "Repeat the word."}, *turns,
                     {"role": "user", "content": "Again?"}, {"role": "assistant", "content": f"{WORDS['negative'][i % 4]}"}]
        rows.append({"messages": turns})
    path.write_text("".join(json.dumps(row) + "\n" for row in rows))


@pytest.mark.slow
@pytest.mark.reruns_stages
def test_a_generative_task_runs_through_every_stage_and_is_reported_by_its_own_headline(baseline_copy, tmp_path):
    """A chat task (multi-turn messages) on a copy of the baseline: the same stages, the same audit of
    what each reads, ROUGE-L as the headline from evaluation to the pipeline's MLflow run."""
    project = baseline_copy
    write_chats(project / CHATS, count=12)  # val and test
    write_chats(project / TRAIN_CHATS, count=30)  # its first twelve are the chats above: the ten in val or test go
    write_chats(project / OTHER_CHATS, count=4, start=100)
    generative = run(project, "dvc", "exp", "run", *GENERATIVE_RUN, env=audited_env(tmp_path / "reads"))
    assert set(ran_stages(generative)) == {"fetch", "prepare", "format", "train", "search_prompt", "evaluate@base",
                                           "evaluate@trained", *ALIGNMENT, "quantize", "evaluate_deployed@merged",
                                           "benchmark", "load_test", "report"}  # base: cached
    assert undeclared_reads(project, tmp_path / "reads", CHATS, TRAIN_CHATS, OTHER_CHATS) == {}
    stats = json.loads((project / "data/prepared/stats.json").read_text())
    assert stats["split_sizes"] == {"train": 20, "val": 4, "test": 6} and stats["unused_examples"] == 2
    assert stats["train_source"]["overlaps_evaluation"] == 10
    assert stats["extra_test_sets"]["other"] == {"raw_rows": 4, "dropped": {}, "examples": 4, "overlaps_train_or_val": 0,
                                                  "rows": 3}
    report = json.loads((project / "data/formatted/report.json").read_text())
    assert report["splits"]["train"]["loss_token_share"] < 1 and report["splits"]["train"]["eos_at_end_share"] == 1.0
    trained = json.loads((project / "metrics/train.json").read_text())
    assert trained["val_loss_after"] < trained["val_loss_before"]  # it learns the chats
    evaluated = json.loads((project / "metrics/eval.json").read_text())
    assert {f"base/{m}/generate" for m in ("zero_shot", "few_shot", "role", "chain_of_thought", "self_consistency",
                                           "optimized")} \
        | {"trained/zero_shot/generate", "merged/zero_shot/generate"} == set(evaluated)
    assert {figures["metric"] for figures in evaluated.values()} == {"rougeL"}
    assert evaluated["merged/zero_shot/generate"]["rougeL"] == evaluated["trained/zero_shot/generate"]["rougeL"]
    text = (project / "metrics/report.md").read_text()
    assert "| scoring | rougeL [95% CI] |" in text and "| trained | lora | zero_shot (instruction) | none | generate |" in text
    assert "| peak RSS MB | rougeL [95% CI] | Δ rougeL |" in text  # the deployment table
    assert "| size MB | other: rougeL [95% CI] |" in text  # the extra test set's own column, for every row
    assert all("other.rougeL" in figures for figures in evaluated.values())
    tradeoffs = (project / "metrics/report/tradeoffs.csv").read_text().splitlines()
    assert tradeoffs[0] == "variant,metric,score,token_latency_p50_ms,tokens_per_second_batch1,size_mb"
    assert tradeoffs[1].startswith(f"trained,rougeL,{evaluated['trained/zero_shot/generate']['rougeL']},")
    parents, _ = pipeline_runs(project)
    generative_run = next(p for p in parents if p.data.params["data.task"] == "generation")
    assert generative_run.data.metrics["rougeL"] == evaluated["trained/zero_shot/generate"]["rougeL"]
