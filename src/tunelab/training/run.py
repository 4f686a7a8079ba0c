"""The training run: TRL's SFTTrainer as it is, fed the format stage's tokens and loss mask."""

import hashlib
import json
from pathlib import Path

import torch

from tunelab.config.schema import StrategyConfig, TrainConfig
from tunelab.errors import TunelabError

CHECKPOINTS = Path("checkpoints")


def token_dataset(rows: list[dict], split: str):
    """input_ids + completion_mask from data/formatted; TRL turns the mask into -100 labels."""
    from datasets import Dataset

    if not rows:
        raise TunelabError(f"data/formatted/{split}.jsonl: no examples")
    if sum(sum(row["completion_mask"]) for row in rows) == 0:
        raise TunelabError(f"data/formatted/{split}.jsonl: no token carries loss (every completion was truncated "
                           "away or is empty); raise format.max_length or check the template's target")
    return Dataset.from_list([{"input_ids": r["input_ids"], "completion_mask": r["completion_mask"]} for r in rows])


def precision_flags(precision: str) -> dict:
    """bf16 where the GPU has it, fp32 on CPU (TRL's default bf16 fails or is slower there)."""
    cuda = torch.cuda.is_available()
    if precision in ("bf16", "fp16") and not cuda:
        raise TunelabError(f"train.precision: {precision} needs a CUDA GPU; use auto or fp32 on this machine")
    if precision == "auto":
        precision = "bf16" if cuda and torch.cuda.is_bf16_supported() else "fp32"
    return {"bf16": precision == "bf16", "fp16": precision == "fp16", "use_cpu": not cuda}


def check_applicable(train: TrainConfig, strategy: StrategyConfig) -> None:
    if strategy.name == "prefix_tuning" and train.gradient_checkpointing:
        raise TunelabError("train.gradient_checkpointing: prefix tuning's cached prefixes do not support it; set it false")


def checkpoint_dir(strategy: StrategyConfig, train: TrainConfig, inputs: list[Path]) -> Path:
    """Where this exact run keeps its checkpoints: a resumed run must match config and data."""
    digest = hashlib.sha256(json.dumps([repr(strategy), repr(train)]).encode())
    for path in inputs:
        digest.update(path.read_bytes())
    return CHECKPOINTS / f"train-{digest.hexdigest()[:12]}"


def sft_config(train: TrainConfig, output_dir: Path):
    from trl import SFTConfig

    early_stopping = train.early_stopping_patience is not None
    return SFTConfig(
        output_dir=str(output_dir),
        learning_rate=train.learning_rate,
        lr_scheduler_type=train.lr_scheduler,
        warmup_steps=train.warmup_ratio,  # a float below 1 is a ratio of the total steps
        max_steps=train.max_steps,
        num_train_epochs=train.epochs,
        per_device_train_batch_size=train.batch_size,
        per_device_eval_batch_size=train.batch_size,
        gradient_accumulation_steps=train.gradient_accumulation_steps,
        weight_decay=train.weight_decay,
        max_grad_norm=train.max_grad_norm,
        seed=train.seed,
        data_seed=train.seed,
        gradient_checkpointing=train.gradient_checkpointing,
        eval_strategy="steps",
        eval_steps=train.eval_steps,
        save_strategy="steps",
        save_steps=train.eval_steps,  # early stopping restores the best evaluated checkpoint
        save_total_limit=train.save_total_limit,
        load_best_model_at_end=early_stopping,
        metric_for_best_model="eval_loss",
        greater_is_better=False,
        logging_steps=train.logging_steps,
        logging_first_step=True,
        include_num_input_tokens_seen="non_padding",
        completion_only_loss=True,
        max_length=None,  # format already truncated to format.max_length
        report_to="none",  # the telemetry callback logs to the stage's own MLflow run
        dataloader_num_workers=0,
        **precision_flags(train.precision),
    )


def build_trainer(model, tokenizer, train: TrainConfig, train_rows, val_rows, output_dir: Path, callbacks: list):
    from transformers import EarlyStoppingCallback
    from trl import SFTTrainer

    if train.early_stopping_patience is not None:
        callbacks = [*callbacks, EarlyStoppingCallback(early_stopping_patience=train.early_stopping_patience)]
    return SFTTrainer(
        model=model,
        args=sft_config(train, output_dir),
        train_dataset=token_dataset(train_rows, "train"),
        eval_dataset=token_dataset(val_rows, "val"),
        processing_class=tokenizer,
        callbacks=callbacks,
    )


def last_checkpoint(folder: Path) -> str | None:
    from transformers.trainer_utils import get_last_checkpoint

    return get_last_checkpoint(str(folder)) if folder.is_dir() else None
