"""The preferences and align stages as processes: on-policy pairs from train rows only, DPO on the
SFT model saved as a model evaluate loads, and a killed alignment resumed to the same end."""

import json
import os
import shutil
import signal
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import yaml
from conftest import REPO_ROOT, made_once
from pipeline_project import AFTER_TRAINING, audited_env, ran_stages, undeclared_reads, would_rerun
from pipeline_project import run as run_in
from safetensors.torch import load_file
from training_helpers import formatted_rows
from transformers import AutoTokenizer

from tunelab.config.compose import compose_conf
from tunelab.io.atomic import write_jsonl
from tunelab.io.jsonl import read_jsonl
from tunelab.models.loading import STRATEGY_FILE, load_variant
from tunelab.paths import ALIGNED, TRAINED, Paths

STAGES = REPO_ROOT / "stages"
FAULT = Path(__file__).parent / "hooks" / "fault.py"
ENV = {**os.environ, "OMP_NUM_THREADS": "1"}


def align_project(root: Path, tiny_model_dir: Path, method: str = "dpo", **align) -> Path:
    """A folder laid out like the repo for the preferences and align stages: params.yaml, models/base,
    models/trained (the tiny model as a fully fine-tuned one), data/formatted train and test."""
    params = compose_conf(REPO_ROOT / "conf", [f"align={method}", "tracking.enabled=false"])
    params["align"].update({"learning_rate": 1e-2, "max_steps": 6, "save_steps": 2, "max_length": 64,
                            "max_completion_length": 6, **align})
    params["align"]["preferences"].update({"prompts": 6, "samples": 3, "max_new_tokens": 3})
    root.mkdir(parents=True)
    (root / "params.yaml").write_text(yaml.safe_dump(params))
    shutil.copytree(tiny_model_dir, root / "models/base")
    shutil.copytree(tiny_model_dir, root / "models/trained")
    (root / "models/trained" / STRATEGY_FILE).write_text(json.dumps({"strategy": "full", "adapter": False,
                                                                     "prompt_learning": False}))
    rows = formatted_rows(AutoTokenizer.from_pretrained(tiny_model_dir))
    write_jsonl(root / "data/formatted/train.jsonl", rows[:6])
    write_jsonl(root / "data/formatted/test.jsonl", rows[6:])
    return root


def run(root: Path, stage: str, check: bool = True) -> subprocess.CompletedProcess:
    result = subprocess.run([sys.executable, str(STAGES / f"{stage}.py")], cwd=root, capture_output=True, text=True,
                            env=ENV)
    assert not check or result.returncode == 0, result.stderr[-3000:]
    return result


def metrics(root: Path) -> dict:
    return json.loads((root / "metrics/align.json").read_text())


@pytest.fixture(scope="session")
def aligned(tiny_model_dir, tmp_path_factory) -> Path:
    """The tiny DPO alignment, made once for the session by whichever worker asks first."""
    def align(folder: Path) -> None:
        root = align_project(folder / "dpo", tiny_model_dir)
        run(root, "preferences")
        run(root, "align")

    return made_once(tmp_path_factory, "aligned", align) / "dpo"


@pytest.mark.slow
def test_dpo_learns_from_the_sft_models_own_wrong_answers_and_saves_a_model_evaluate_loads(aligned, tiny_model_dir):
    pairs = read_jsonl(aligned / "data/preferences/pairs.jsonl")
    stats = json.loads((aligned / "data/preferences/stats.json").read_text())
    train_ids = {row["id"] for row in read_jsonl(aligned / "data/formatted/train.jsonl")}
    assert pairs and {pair["id"] for pair in pairs} <= train_ids  # never a test row (rows 6 and 7)
    assert stats["pairs"] == len(pairs) and stats["prompts"] == 6
    assert stats["prompts_always_right"] == 6 - len({pair["id"] for pair in pairs})

    record = metrics(aligned)
    assert record["method"] == "dpo" and record["steps"] == 6 and record["pairs"] == len(pairs)
    assert "final_rewards_margins" in record and record["resumed_from"] is None
    loss = (aligned / "metrics/align/loss.csv").read_text().splitlines()
    assert loss[0] == "step,loss" and len(loss) == 1 + 6  # one row per logged step (logging_steps 1)
    assert (aligned / "metrics/align/rewards_accuracies.csv").is_file()
    assert not list(aligned.glob("checkpoints/align-*")), "checkpoints are removed once alignment finished"

    paths = Paths(aligned)
    model, sft = load_variant(ALIGNED, paths), load_variant(TRAINED, paths)
    assert json.loads((aligned / "models/aligned" / STRATEGY_FILE).read_text())["strategy"] == "full+dpo"
    assert json.loads((aligned / "models/aligned/config.json").read_text())["use_cache"] is True, \
        "TRL's Trainer turns the KV cache off; the deployed model generates with it"
    ids = torch.tensor([[5, 6, 7, 8]])
    with torch.no_grad():
        assert not torch.allclose(model(ids).logits, sft(ids).logits, atol=1e-4), "alignment changed nothing"


@pytest.mark.slow
def test_a_killed_alignment_resumes_from_its_last_checkpoint_to_the_same_end(aligned, tiny_model_dir, tmp_path):
    root = align_project(tmp_path / "killed", tiny_model_dir)
    shutil.copytree(aligned / "data/preferences", root / "data/preferences")
    killed = subprocess.run([sys.executable, str(FAULT), r"checkpoint-4/trainer_state\.json$", "kill",
                             str(STAGES / "align.py")], cwd=root, capture_output=True, text=True, env=ENV)
    assert killed.returncode == -signal.SIGKILL
    assert not (root / "models/aligned").exists() and not (root / "metrics/align.json").exists()

    resumed = run(root, "align")
    assert "checkpoint-4: incomplete (its save never finished: killed, or the disk was full); not resumed from" \
        in resumed.stdout
    assert "resuming from checkpoints/align-" in resumed.stdout and "checkpoint-2" in resumed.stdout
    assert metrics(root)["steps"] == 6 and metrics(root)["resumed_from"] is not None
    for key in ("final_loss", "final_rewards_margins"):
        assert metrics(root)[key] == pytest.approx(metrics(aligned)[key], rel=1e-4, abs=1e-6), key
    paths, reference = Paths(root), Paths(aligned)
    ids = torch.tensor([[5, 6, 7, 8]])
    with torch.no_grad():
        assert torch.allclose(load_variant(ALIGNED, paths)(ids).logits, load_variant(ALIGNED, reference)(ids).logits,
                              atol=1e-5)


@pytest.mark.slow
def test_align_none_skips_without_a_model_and_bad_settings_stop_before_any_work(tiny_model_dir, tmp_path):
    root = align_project(tmp_path / "none", tiny_model_dir, method="none")
    assert "preferences: skipped" in run(root, "preferences").stdout
    assert "align: skipped: align=none" in run(root, "align").stdout
    assert (root / "models/aligned/SKIPPED.txt").read_text().startswith("align=none")
    assert metrics(root) == {"method": "none", "skipped": metrics(root)["skipped"], "tracking": "disabled"}

    bad = align_project(tmp_path / "bad", tiny_model_dir, method="grpo", batch_size=6)
    result = run(bad, "align", check=False)
    assert result.returncode == 2
    assert result.stderr.strip().splitlines()[-1] == (
        "error: align.batch_size: 6 completions per step must be a multiple of align.num_generations (4): "
        "each prompt's group is sampled whole")
    assert not (bad / "models/aligned").exists()


def test_dpo_refuses_a_file_of_unpaired_rows_naming_kto_before_loading_a_model(tiny_model_dir, tmp_path):
    rated = tmp_path / "rated.jsonl"
    write_jsonl(rated, [{"prompt": "p", "completion": "good", "label": True}])
    root = align_project(tmp_path / "project", tiny_model_dir)
    params = yaml.safe_load((root / "params.yaml").read_text())
    params["align"]["preferences"].update({"source": "file", "path": str(rated)})
    (root / "params.yaml").write_text(yaml.safe_dump(params))
    refused = run(root, "preferences", check=False)
    assert refused.returncode != 0
    assert (f"error: align.method=dpo learns from pairs (prompt, chosen, rejected); {rated} holds unpaired rows "
            "(prompt, completion, label): use align=kto") in refused.stderr
    assert not (root / "data/preferences/pairs.jsonl").exists()


@pytest.mark.slow
def test_dpo_through_dvc_reruns_only_the_alignment_and_the_report_shows_sft_and_sft_plus_dpo(baseline_copy, tmp_path):
    """`dvc exp run -S align=dpo` on a copy of the baseline: the pairs, the alignment, its evaluation, the
    deployable variants made again from the aligned model, their benchmark and the report run, every stage
    process audited; nothing before them reruns."""
    project = baseline_copy
    overrides = ["align=dpo", "align.max_steps=4", "align.max_length=64", "align.preferences.prompts=8",
                 "align.preferences.samples=3", "align.preferences.max_new_tokens=3",
                 "tracking.enabled=false"]  # no stage reads it; the baseline and the chat run test the tracking
    assert would_rerun(project, *overrides) == AFTER_TRAINING
    result = run_in(project, "dvc", "exp", "run", *[arg for o in overrides for arg in ("-S", o)],
                 env=audited_env(tmp_path / "reads"))
    assert ran_stages(result) == AFTER_TRAINING
    assert undeclared_reads(project, tmp_path / "reads") == {}
    test_ids = {row["id"] for row in read_jsonl(project / "data/prepared/test.jsonl")}
    assert not {pair["id"] for pair in read_jsonl(project / "data/preferences/pairs.jsonl")} & test_ids
    evaluated = json.loads((project / "metrics/eval.json").read_text())
    assert {"trained/zero_shot/choice", "aligned/zero_shot/choice"} <= set(evaluated)
    aligned, trained = evaluated["aligned/zero_shot/choice"], evaluated["trained/zero_shot/choice"]
    assert aligned["examples"] == trained["examples"] == 12
    align_seconds = json.loads((project / "metrics/align.json").read_text())["train_seconds"]
    assert aligned["train_seconds"] == pytest.approx(trained["train_seconds"] + align_seconds, abs=0.1)
    report = (project / "metrics/report.md").read_text()
    assert "| aligned | lora + dpo | zero_shot (sentiment_instruction) | none | choice |" in report
    assert "`aligned`: skipped" not in report
    # the deployable variants are the aligned model's: merged holds its weights exactly, costs include alignment
    assert json.loads((project / "metrics/quantize.json").read_text())["source"] == ALIGNED
    merged, aligned_weights = (load_file(project / folder / "model.safetensors")
                               for folder in ("models/deploy/merged/model", "models/aligned"))
    assert merged.keys() == aligned_weights.keys()
    assert all(torch.equal(merged[name], aligned_weights[name]) for name in merged)
    assert "| merged | lora + dpo | zero_shot (sentiment_instruction) | merged | choice |" in report
    quantize_seconds = json.loads((project / "metrics/quantize.json").read_text())["variants"]["merged"]["seconds"]
    assert evaluated["merged/zero_shot/choice"]["train_seconds"] == pytest.approx(
        aligned["train_seconds"] + quantize_seconds, abs=0.1)
    assert {TRAINED, ALIGNED, "merged", "int8_dynamic"} <= set(
        json.loads((project / "metrics/bench.json").read_text())["variants"])
