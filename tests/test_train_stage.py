"""The train stage as a process: killed and resumed, and under accelerate's DDP launcher."""

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
import yaml
from conftest import REPO_ROOT, made_once
from safetensors.torch import load_file
from training_helpers import formatted_rows
from transformers import AutoTokenizer

from tunelab.config.compose import compose_conf
from tunelab.io.atomic import write_jsonl

STAGE = REPO_ROOT / "stages" / "train.py"
ACCELERATE = str(Path(sys.executable).parent / "accelerate")


def train_project(root: Path, tiny_model_dir: Path, overrides: tuple[str, ...] = (), **train) -> Path:
    """A folder laid out like the repo for the train stage: params.yaml, models/base, data/formatted."""
    params = compose_conf(REPO_ROOT / "conf", ["strategy=lora", "tracking.enabled=false", *overrides])
    params["train"].update({"learning_rate": 1e-2, "warmup_ratio": 0.0, "batch_size": 4, "logging_steps": 1,
                            "early_stopping_patience": None, "profile_steps": 0, **train})
    root.mkdir(parents=True)
    (root / "params.yaml").write_text(yaml.safe_dump(params))
    shutil.copytree(tiny_model_dir, root / "models" / "base")
    rows = formatted_rows(AutoTokenizer.from_pretrained(tiny_model_dir))
    write_jsonl(root / "data/formatted/train.jsonl", rows)
    write_jsonl(root / "data/formatted/val.jsonl", rows)
    return root


def run_stage(root: Path, *launcher: str) -> subprocess.CompletedProcess:
    command = [*launcher, str(STAGE)] if launcher else [sys.executable, str(STAGE)]
    result = subprocess.run(command, cwd=root, capture_output=True, text=True, env={**os.environ, "OMP_NUM_THREADS": "1"})
    assert result.returncode == 0, result.stderr[-3000:]
    return result


def metrics(root: Path) -> dict:
    return json.loads((root / "metrics/train.json").read_text())


def wait_for_checkpoint(root: Path, process: subprocess.Popen, step: int, timeout: float = 120) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        done = list(root.glob(f"checkpoints/train-*/checkpoint-{step}/trainer_state.json"))
        if done:
            return
        assert process.poll() is None, "the run ended before it could be killed"
        time.sleep(0.01)
    raise AssertionError(f"no checkpoint-{step} within {timeout} s")


@pytest.mark.slow
def test_a_killed_run_resumes_from_its_last_checkpoint_and_ends_as_an_uninterrupted_one(tiny_model_dir, tmp_path):
    settings = {"max_steps": 200, "eval_steps": 10}
    uninterrupted = train_project(tmp_path / "uninterrupted", tiny_model_dir, **settings)
    run_stage(uninterrupted)

    killed = train_project(tmp_path / "killed", tiny_model_dir, **settings)
    process = subprocess.Popen([sys.executable, str(STAGE)], cwd=killed, stdout=subprocess.DEVNULL,
                               stderr=subprocess.DEVNULL, env={**os.environ, "OMP_NUM_THREADS": "1"})
    wait_for_checkpoint(killed, process, step=40)
    process.send_signal(signal.SIGKILL)
    process.wait()
    assert not (killed / "models/trained").exists(), "a killed run must leave no trained model"
    assert not (killed / "metrics/train.json").exists()

    resumed = run_stage(killed)
    assert "resuming from checkpoints/train-" in resumed.stdout
    assert metrics(killed)["resumed_from"] is not None and metrics(killed)["steps"] == 200
    # Same seed, same data order (the trainer restores RNG and skips seen batches): on CPU the
    # end is the same up to float noise; the stated tolerance is 1e-5 relative.
    for key in ("val_loss_after", "train_loss_final"):
        assert metrics(killed)[key] == pytest.approx(metrics(uninterrupted)[key], rel=1e-5), key
    assert_same_adapter(killed, uninterrupted, atol=1e-5)
    assert not list(killed.glob("checkpoints/train-*")), "checkpoints are removed once training finished"


@pytest.mark.slow
def test_ddp_on_two_cpu_processes_matches_one_process(tiny_model_dir, tmp_path):
    """2 processes × batch 4 (gloo) against 1 process × batch 8: the same global batches.

    Exact: the first step's loss (the label tokens of both processes normalise one loss).
    Within 2%: the val loss after 20 steps. The first update already differs slightly (about
    4e-4 relative in the next loss, without clipping, with SGD); the cause is not found yet
    (docs/training.md), so the end result is held to a stated tolerance, not to equality.
    """
    # group_by_length groups within megabatches sized by the per-process batch, which differs here
    settings = {"max_steps": 20, "eval_steps": 10, "group_by_length": False}
    no_dropout = ("strategy.lora.dropout=0.0",)  # each process draws its own dropout masks
    single = train_project(tmp_path / "single", tiny_model_dir, no_dropout, batch_size=8, **settings)
    assert "1 process" in run_stage(single).stdout
    ddp = train_project(tmp_path / "ddp", tiny_model_dir, no_dropout, batch_size=4, **settings)
    launched = run_stage(ddp, ACCELERATE, "launch", "--config_file", str(REPO_ROOT / "launch/ddp.yaml"))  # as shipped
    assert "2 processes" in launched.stdout
    batches = [{key: metrics(root)[key] for key in ("processes", "distributed_type", "per_device_batch", "effective_batch")}
               for root in (single, ddp)]
    assert batches == [{"processes": 1, "distributed_type": "NO", "per_device_batch": 8, "effective_batch": 8},
                       {"processes": 2, "distributed_type": "MULTI_CPU", "per_device_batch": 4, "effective_batch": 8}]
    assert first_logged_loss(ddp) == pytest.approx(first_logged_loss(single), rel=1e-6)
    assert metrics(ddp)["val_loss_after"] < metrics(ddp)["val_loss_before"] - 0.05  # it did learn
    assert metrics(ddp)["val_loss_after"] == pytest.approx(metrics(single)["val_loss_after"], rel=2e-2)


@pytest.mark.slow
@pytest.mark.skipif(torch.cuda.device_count() < 2, reason="accelerate shards with FSDP on accelerators only (2 GPUs)")
def test_fsdp_full_shard_on_two_gpus_matches_one_process(tiny_model_dir, tmp_path):
    """launch/fsdp.yaml as shipped (FSDP2, full shard), 2 processes × batch 4, against 1 process ×
    batch 8. Tolerances: the first step's loss to 1e-5 relative (the same global batch, each
    shard's loss normalised by the label tokens of both); the val loss after 20 steps to 2%, as
    for DDP (docs/training.md)."""
    settings = {"max_steps": 20, "eval_steps": 10, "group_by_length": False, "precision": "fp32"}
    no_dropout = ("strategy.lora.dropout=0.0",)
    single = train_project(tmp_path / "single", tiny_model_dir, no_dropout, batch_size=8, **settings)
    run_stage(single)
    fsdp = train_project(tmp_path / "fsdp", tiny_model_dir, no_dropout, batch_size=4, **settings)
    launched = run_stage(fsdp, ACCELERATE, "launch", "--config_file", str(REPO_ROOT / "launch/fsdp.yaml"))
    assert "2 processes (FSDP)" in launched.stdout
    assert metrics(fsdp)["effective_batch"] == metrics(single)["effective_batch"] == 8
    assert first_logged_loss(fsdp) == pytest.approx(first_logged_loss(single), rel=1e-5)
    assert metrics(fsdp)["val_loss_after"] < metrics(fsdp)["val_loss_before"] - 0.05  # it did learn
    assert metrics(fsdp)["val_loss_after"] == pytest.approx(metrics(single)["val_loss_after"], rel=2e-2)


@pytest.mark.skipif(torch.cuda.is_available(), reason="on a GPU machine FSDP applies")
def test_fsdp_on_cpu_processes_is_one_line_not_a_silent_ddp_run(tiny_model_dir, tmp_path):
    """Without accelerators accelerate turns an FSDP config into plain DDP (MULTI_CPU) without a word."""
    fsdp = train_project(tmp_path / "fsdp", tiny_model_dir, batch_size=4, max_steps=2)
    result = subprocess.run([ACCELERATE, "launch", "--config_file", str(REPO_ROOT / "launch/fsdp.yaml"), str(STAGE)],
                            cwd=fsdp, capture_output=True, text=True, env={**os.environ, "OMP_NUM_THREADS": "1"})
    assert result.returncode != 0
    assert "error: train.launcher: an FSDP config on CPU processes, where accelerate does not shard" in result.stderr
    assert not (fsdp / "models/trained").exists()


def first_logged_loss(root: Path) -> float:
    return float((root / "metrics/train/loss.csv").read_text().splitlines()[1].split(",")[1])


def assert_same_adapter(first: Path, second: Path, atol: float) -> None:
    weights = load_file(first / "models/trained/adapter_model.safetensors")
    other = load_file(second / "models/trained/adapter_model.safetensors")
    assert weights.keys() == other.keys()
    for name, tensor in weights.items():
        assert (tensor - other[name]).abs().max() <= atol, name


FAULT = Path(__file__).parent / "hooks" / "fault.py"
SHORT = {"max_steps": 30, "eval_steps": 10}  # a complete checkpoint at steps 10, 20 and 30 (the last)


def run_with_fault(root: Path, pattern: str, action: str) -> subprocess.CompletedProcess:
    """The train stage, killed (or out of disk) at the first write whose path matches ``pattern``."""
    return subprocess.run([sys.executable, str(FAULT), pattern, action, str(STAGE)], cwd=root, capture_output=True,
                          text=True, env={**os.environ, "OMP_NUM_THREADS": "1"})


@pytest.fixture(scope="session")
def uninterrupted(tiny_model_dir, tmp_path_factory) -> Path:
    """The short training run the interrupted ones must end like, made once for the session."""
    def train(folder: Path) -> None:
        run_stage(train_project(folder / "uninterrupted", tiny_model_dir, **SHORT))

    return made_once(tmp_path_factory, "uninterrupted", train) / "uninterrupted"


def assert_same_end(resumed: Path, uninterrupted: Path) -> None:
    for key in ("val_loss_after", "train_loss_final", "steps", "best_step"):
        assert metrics(resumed)[key] == pytest.approx(metrics(uninterrupted)[key], rel=1e-5), key
    assert_same_adapter(resumed, uninterrupted, atol=1e-5)
    for curve in ("loss.csv", "val_loss.csv"):  # the whole run's curves, not only the steps after the resume
        assert (resumed / "metrics/train" / curve).read_text().splitlines()[0] == \
            (uninterrupted / "metrics/train" / curve).read_text().splitlines()[0]
        assert len((resumed / "metrics/train" / curve).read_text().splitlines()) == \
            len((uninterrupted / "metrics/train" / curve).read_text().splitlines())


@pytest.mark.slow
def test_a_kill_mid_save_and_a_truncated_checkpoint_resume_from_the_last_complete_one(tiny_model_dir, tmp_path,
                                                                                      uninterrupted):
    root = train_project(tmp_path / "killed", tiny_model_dir, **SHORT)
    killed = run_with_fault(root, r"checkpoint-30/trainer_state\.json$", "kill")  # weights written, state not
    assert killed.returncode == -signal.SIGKILL
    [folder] = root.glob("checkpoints/train-*")
    weights = folder / "checkpoint-20/adapter_model.safetensors"
    weights.write_bytes(weights.read_bytes()[: weights.stat().st_size // 2])  # cut short, as a full disk leaves it

    resumed = run_stage(root)
    assert "checkpoint-30: incomplete (its save never finished: killed, or the disk was full); not resumed from" \
        in resumed.stdout
    assert "checkpoint-20: adapter_model.safetensors is truncated" in resumed.stdout
    assert f"resuming from {folder.relative_to(root) / 'checkpoint-10'}" in resumed.stdout
    assert_same_end(root, uninterrupted)


@pytest.mark.slow
def test_a_full_disk_during_a_save_is_one_line_and_the_rerun_resumes_before_it(tiny_model_dir, tmp_path, uninterrupted):
    root = train_project(tmp_path / "full", tiny_model_dir, **SHORT)
    full = run_with_fault(root, r"checkpoint-20/.", "disk-full")
    assert full.returncode == 1 and "Traceback" not in full.stderr
    [line] = [line for line in full.stderr.splitlines() if line.startswith("error:")]
    assert line.startswith("error: disk full (") and "free space" in line
    assert not (root / "models/trained").exists()

    resumed = run_stage(root)
    assert "checkpoint-20: incomplete" in resumed.stdout and "resuming from" in resumed.stdout
    assert resumed.stdout.split("resuming from ")[1].split()[0].endswith("checkpoint-10")
    assert_same_end(root, uninterrupted)


@pytest.mark.slow
def test_a_changed_base_model_never_resumes_onto_checkpoints_of_the_old_one(tiny_model_dir, tmp_path):
    from safetensors.torch import save_file

    root = train_project(tmp_path / "rebased", tiny_model_dir, **SHORT)
    assert run_with_fault(root, r"checkpoint-20/.", "kill").returncode == -signal.SIGKILL
    assert list(root.glob("checkpoints/train-*/checkpoint-10"))
    weights = root / "models/base/model.safetensors"
    tensors = load_file(weights)
    name = next(iter(tensors))
    tensors[name] = tensors[name] + 0.01  # same names and shapes: only the content says it changed
    save_file(tensors, weights, metadata={"format": "pt"})

    rerun = run_stage(root)
    assert "resuming" not in rerun.stdout and ", training from scratch" in rerun.stdout
    assert metrics(root)["resumed_from"] is None and metrics(root)["steps"] == 30


@pytest.mark.slow
def test_a_kill_after_the_final_save_before_the_outputs_resumes_to_the_same_metrics(tiny_model_dir, tmp_path,
                                                                                   uninterrupted):
    root = train_project(tmp_path / "late", tiny_model_dir, **SHORT)
    assert run_with_fault(root, r"models/trained\.tmp-", "kill").returncode == -signal.SIGKILL
    assert list(root.glob("checkpoints/train-*/checkpoint-30")) and not (root / "metrics/train.json").exists()

    resumed = run_stage(root)
    assert "resuming from" in resumed.stdout and resumed.stdout.split("resuming from ")[1].split()[0].endswith("checkpoint-30")
    assert_same_end(root, uninterrupted)
