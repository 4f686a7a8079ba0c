"""Stage train: fine-tune models/base on data/formatted with the strategy conf/strategy selects.

    dvc exp run                                   # default: LoRA r=8 on q/k/v/o
    dvc exp run -S strategy=qlora                 # also: full, prompt_tuning, prefix_tuning, ia3, qat
    dvc exp run -S train.learning_rate=1e-4 -S train.max_steps=300
    dvc exp run -S 'train.launcher=accelerate launch --num_processes 2'    # DDP (see docs/training.md)

Killed mid-run, the next run resumes from the newest complete checkpoint in checkpoints/ (not a
DVC output), else the one before, else from scratch, and says which (tunelab.training.checkpoints).
"""

import os
import shutil
import sys
import time
from contextlib import nullcontext
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))  # this tree's code: see tunelab.stage

from tunelab.config.load import read_params, to_section
from tunelab.config.schema import StrategyConfig, TrainConfig
from tunelab.errors import TunelabError
from tunelab.io.atomic import atomic_dir, write_csv
from tunelab.io.jsonl import read_jsonl
from tunelab.paths import PATHS, Paths
from tunelab.prompts.tokenization import loss_token_share
from tunelab.stage import run_stage
from tunelab.tracking.mlflow_run import StageRun, stage_run
from tunelab.training.callbacks import OptunaPruning, ProfileSteps, TrainingTelemetry
from tunelab.training.checkpoints import checkpoint_dir, resumable_checkpoint
from tunelab.training.pruning import trial_for_this_run
from tunelab.training.run import build_trainer, kept_val_loss
from tunelab.training.strategies import STRATEGIES, save_initial_adapter, save_trained, trainable_model
from tunelab.training.throughput import flops_per_token, measure_matmul_peak, total_parameters, trainable_parameters

TRACE = "train_profile.json.gz"  # under checkpoints/: an MLflow artifact, not a DVC output


def is_main_process() -> bool:
    return int(os.environ.get("RANK", "0")) == 0


def write_curves(paths: Paths, log_history: list[dict]) -> None:
    """DVC plots (dvc plots show/diff) of the logged steps: the Trainer's log history, which a
    resumed run restores, so the curves cover the whole run."""
    for name, key in (("loss", "loss"), ("val_loss", "eval_loss"), ("learning_rate", "learning_rate")):
        rows = [{"step": row["step"], key: row[key]} for row in log_history if key in row]
        write_csv(paths.train_curves / f"{name}.csv", rows)


def publish(paths: Paths, tracking: StageRun, metrics: dict, log_history: list[dict], checkpoints: Path) -> None:
    """Metrics and curves for DVC, the same and the profiler trace for MLflow; drop checkpoints."""
    tracking.write_metrics(paths.train_metrics, metrics)
    write_curves(paths, log_history)
    tracking.log_metrics({k: v for k, v in metrics.items() if isinstance(v, (int, float)) and not isinstance(v, bool)})
    tracking.log_artifact(paths.train_metrics)
    if (trace := paths.checkpoints / TRACE).exists():
        tracking.log_artifact(trace, "profile")
    shutil.rmtree(checkpoints, ignore_errors=True)  # finished: DVC caches the result


def agreed_resume_point(resume_from: str | None) -> str | None:
    """Under DDP, rank 0 chose (and cleaned up) the checkpoint: every process resumes from it."""
    import torch.distributed as dist

    if not (dist.is_available() and dist.is_initialized()):
        return resume_from
    chosen = [resume_from]
    dist.broadcast_object_list(chosen, src=0)
    return chosen[0]


def check_sharding_applies() -> None:
    """accelerate shards with FSDP only on accelerator processes: launched with launch/fsdp.yaml on
    CPU processes it would train with plain DDP, and say nothing. One line instead, before the model loads."""
    import torch

    if os.environ.get("ACCELERATE_USE_FSDP", "false").lower() == "true" and not torch.accelerator.is_available():
        raise TunelabError("train.launcher: an FSDP config on CPU processes, where accelerate does not shard (it would run "
                           "DDP): use launch/ddp.yaml here, and launch/fsdp.yaml on GPUs")


def run(paths: Paths, strategy: StrategyConfig, train: TrainConfig, tracking: StageRun, trial=None) -> None:
    """Train the base model under ``paths`` with the strategy, resuming from this run's last complete
    checkpoint; save it to ``paths.trained_model`` with its metrics and curves. ``trial``: the Optuna
    trial this run is, which a losing intermediate val loss prunes."""
    inputs = [paths.split(paths.formatted, "train"), paths.split(paths.formatted, "val")]
    train_rows, val_rows = (read_jsonl(path, required=("input_ids", "completion_mask")) for path in inputs)

    from transformers import AutoTokenizer, set_seed

    set_seed(train.seed)  # adapter initialisation is random too
    tokenizer = AutoTokenizer.from_pretrained(paths.base_model)
    model = trainable_model(paths.base_model, strategy, train.gradient_checkpointing)
    telemetry = TrainingTelemetry(tracking, flops_per_token(model), measure_matmul_peak(), measure_matmul_peak)
    checkpoints = checkpoint_dir((strategy, train), inputs, paths.base_model, root=paths.checkpoints)
    initial_adapter = save_initial_adapter(model, strategy, checkpoints / "initial_adapter")
    callbacks = [telemetry, ProfileSteps(train.profile_steps, paths.checkpoints / TRACE)]
    if trial:  # a tunelab tune trial: prune it if it loses
        callbacks.append(OptunaPruning(trial))
    trainer = build_trainer(model, tokenizer, train, train_rows, val_rows, checkpoints, callbacks)
    val_loss_before = trainer.evaluate()["eval_loss"]
    resume_from, notes = resumable_checkpoint(checkpoints) if is_main_process() else (None, [])
    resume_from = agreed_resume_point(resume_from)
    for note in notes:
        print(f"train: {note}")
    processes = trainer.args.world_size
    start = f"resuming from {resume_from}" if resume_from else (
        "no complete checkpoint, training from scratch" if notes else "training from scratch")
    print(f"train: {strategy.name}, {trainable_parameters(model):,} of {total_parameters(model):,} parameters trainable, "
          f"{processes} process{'es' if processes > 1 else ''} ({trainer.accelerator.distributed_type.value}), {start}")
    started = time.perf_counter()
    trainer.train(resume_from_checkpoint=resume_from)
    train_seconds = time.perf_counter() - started
    val_loss_after = kept_val_loss(trainer)  # the best checkpoint's, with early stopping
    if not trainer.is_world_process_zero():
        return
    with atomic_dir(paths.trained_model) as folder:
        save_trained(trainer.model, tokenizer, strategy, folder, initial_adapter)
    metrics = {
        "strategy": strategy.name,
        "trainable_parameters": trainable_parameters(trainer.model),
        "total_parameters": total_parameters(trainer.model),
        "val_loss_before": round(val_loss_before, 4),
        "val_loss_after": round(val_loss_after, 4),
        "steps": trainer.state.global_step,
        "best_step": int(trainer.state.best_global_step or trainer.state.global_step),
        "resumed_from": resume_from,
        # the batch an optimizer step sees: train.batch_size is per process
        "processes": processes,
        "distributed_type": trainer.accelerator.distributed_type.value,  # NO, MULTI_CPU, MULTI_GPU, FSDP, DEEPSPEED
        "per_device_batch": trainer.args.per_device_train_batch_size,
        "effective_batch": trainer.args.per_device_train_batch_size * processes * trainer.args.gradient_accumulation_steps,
        "train_seconds": round(train_seconds, 1),
        "loss_token_share": round(loss_token_share([r["input_ids"] for r in train_rows],
                                                   [r["completion_mask"] for r in train_rows]), 4),
        **telemetry.summary(trainer.state.log_history),
    }
    publish(paths, tracking, metrics, trainer.state.log_history, checkpoints)
    print(f"train: val loss {val_loss_before:.4f} -> {val_loss_after:.4f} in {train_seconds:.0f} s "
          f"({metrics['tokens_per_second']} tokens/s, MFU {metrics['mfu']})")


def main() -> None:
    check_sharding_applies()
    params = read_params()
    strategy = to_section(StrategyConfig, "strategy", params.get("strategy"))
    train = to_section(TrainConfig, "train", params.get("train"))
    STRATEGIES[strategy.name].check_training(train)
    trial = trial_for_this_run(params.get("tracking") or {})
    tracking = (stage_run("train", params, ("strategy", "train"), system_metrics=True) if is_main_process()
                else nullcontext(StageRun()))
    with tracking as tracker:
        run(PATHS, strategy, train, tracker, trial)


if __name__ == "__main__":
    run_stage(main)
