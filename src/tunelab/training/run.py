"""The training run: transformers' Trainer as it is, fed the format stage's tokens and loss mask.

Labels are the input ids where the completion mask is 1 and -100 elsewhere, so the loss is on
the completion (target + EOS) only. The Trainer normalises the loss by the number of label
tokens in the whole accumulated batch (``num_items_in_batch``), so gradient accumulation gives
the same loss scale as the equivalent larger batch (tested).

Only the logits that carry loss are computed: a classifier's completion is its label and EOS,
~3% of a row's tokens, yet projecting every position onto the vocabulary (and back, in the
backward pass) is a fifth of a small model's FLOPs and most of its memory traffic. Padded
batches therefore pass the model the positions whose next token carries loss (transformers'
``logits_to_keep``, which takes a tensor of positions) and the Trainer's ``compute_loss_func``
scores those logits: the same loss (tested against the model's own, with its gradients).

Why not TRL's SFTTrainer: its tokenisation is not needed (format did it), and in TRL 1.16 its
loss always runs a chunked, fused lm_head that on CPU took 2.6 s of a 5.7 s LoRA step.
"""

import dataclasses
import inspect
from pathlib import Path

import torch

from tunelab.config.schema import TrainConfig
from tunelab.errors import TunelabError
from tunelab.training.checkpoints import MarkCompleteCheckpoints

IGNORED = -100
"""The label of a token that carries no loss (transformers' and PyTorch's ignore index)."""


def labels_from_mask(input_ids: list[int], completion_mask: list[int]) -> list[int]:
    """-100 (ignored by the loss) on prompt tokens; the completion and its EOS carry loss."""
    return [token if carries_loss else IGNORED for token, carries_loss in zip(input_ids, completion_mask)]


def token_dataset(rows: list[dict], split: str):
    """input_ids, attention_mask and labels from data/formatted's tokens and completion mask."""
    from datasets import Dataset

    if not rows:
        raise TunelabError(f"data/formatted/{split}.jsonl: no examples")
    if sum(sum(row["completion_mask"]) for row in rows) == 0:
        raise TunelabError(f"data/formatted/{split}.jsonl: no token carries loss (every completion was truncated "
                           "away or is empty); raise format.max_length or check the template's target")
    return Dataset.from_list([
        {"input_ids": r["input_ids"], "attention_mask": [1] * len(r["input_ids"]),
         "labels": labels_from_mask(r["input_ids"], r["completion_mask"])}
        for r in rows
    ])


def precision_flags(precision: str) -> dict:
    """bf16 where the GPU has it, fp32 on CPU (bf16 autocast on this CPU is slower)."""
    cuda = torch.cuda.is_available()
    if precision in ("bf16", "fp16") and not cuda:
        raise TunelabError(f"train.precision: {precision} needs a CUDA GPU; use auto or fp32 on this machine")
    if precision == "auto":
        precision = "bf16" if cuda and torch.cuda.is_bf16_supported() else "fp32"
    return {"bf16": precision == "bf16", "fp16": precision == "fp16", "use_cpu": not cuda}


def training_arguments(train: TrainConfig, output_dir: Path):
    """transformers' TrainingArguments: what tunelab sets, then train.extra_args (any other field)."""
    from transformers import TrainingArguments

    return TrainingArguments(**managed_arguments(train, output_dir), **train.extra_args)


def check_extra_args(train: TrainConfig) -> None:
    """train.extra_args names fields of TrainingArguments that tunelab does not set itself."""
    from transformers import TrainingArguments

    from tunelab.config.passthrough import check_passthrough

    check_passthrough("train.extra_args", train.extra_args, TrainingArguments, managed_arguments(train, Path(".")),
                      instead=" (from a train key)")


def managed_arguments(train: TrainConfig, output_dir: Path) -> dict:
    early_stopping = train.early_stopping_patience is not None
    return dict(
        output_dir=str(output_dir),
        optim=train.optimizer,
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
        activation_checkpointing=train.gradient_checkpointing,  # transformers 5 renamed gradient_checkpointing
        train_sampling_strategy="group_by_length" if train.group_by_length else "random",
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
        include_num_input_tokens_seen="all" if train.padding_free else "non_padding",  # packed: every token is real
        report_to="none",  # the telemetry callback logs to the stage's own MLflow run
        prediction_loss_only=True,  # evaluation needs the loss only, not every batch's full-vocabulary logits
        dataloader_num_workers=0,
        **precision_flags(train.precision),
    )


def learns_a_prompt(model) -> bool:
    """Prompt or prefix tuning: PEFT prepends virtual tokens, built per row of a padded batch."""
    config = getattr(model, "active_peft_config", None)
    return config is not None and config.is_prompt_learning


def packs(model, train: TrainConfig) -> bool:
    """Padding-free batches, unless the strategy prepends virtual tokens (learns_a_prompt)."""
    return train.padding_free and not learns_a_prompt(model)


def keeps_loss_logits_only(model, packed: bool) -> bool:
    """Whether training can project only the loss-carrying positions: padded batches (a packed row's
    positions restart per example) of a model whose forward takes ``logits_to_keep``, and not prompt
    or prefix tuning (their virtual tokens would shift the positions)."""
    if packed or learns_a_prompt(model):
        return False
    base = model.get_base_model() if hasattr(model, "get_base_model") else model
    return "logits_to_keep" in inspect.signature(base.forward).parameters


def only_loss_positions(batch: dict) -> dict:
    """The padded batch with ``logits_to_keep``, the positions whose next token carries loss in any
    row, and ``labels`` cut to the tokens those positions predict, after one ignored column: the
    Trainer counts a causal LM's loss tokens (``num_items_in_batch``) over ``labels[..., 1:]``."""
    labels = batch["labels"]
    positions = (labels[:, 1:] != IGNORED).any(0).nonzero().squeeze(1)
    kept = torch.full((labels.shape[0], len(positions) + 1), IGNORED, dtype=labels.dtype)
    kept[:, 1:] = labels[:, positions + 1]
    return {**batch, "labels": kept, "logits_to_keep": positions}


def loss_at_kept_positions(outputs, labels: torch.Tensor, num_items_in_batch=None) -> torch.Tensor:
    """Cross-entropy of the kept logits [rows, kept, vocab] against ``labels[:, 1:]``: summed and divided
    by the loss tokens of the whole accumulated batch where the Trainer counted them, as transformers'
    causal-LM loss does, else their mean."""
    logits = outputs.logits.float()
    targets = labels[:, 1:].to(logits.device)
    loss = torch.nn.functional.cross_entropy(logits.reshape(-1, logits.shape[-1]), targets.reshape(-1),
                                             ignore_index=IGNORED, reduction="sum")
    if num_items_in_batch is None:
        return loss / targets.ne(IGNORED).sum().clamp(min=1)
    return loss / (num_items_in_batch.to(loss.device) if torch.is_tensor(num_items_in_batch) else num_items_in_batch)


def collator(tokenizer, packed: bool, loss_logits_only: bool = False):
    """Packed: a batch's examples in one row without padding, positions restarting at each example,
    so transformers' attention masks keep every example to itself (masking_utils finds the packed
    sequences from position_ids); the first label of each example is -100, as it is in a padded
    row (no token before it predicts it), so the same tokens carry the loss. Padded: input_ids
    with the pad token and labels with -100, so padding never carries loss while the real EOS
    keeps its label even when pad == eos (SmolLM2)."""
    from transformers import DataCollatorForSeq2Seq, DataCollatorWithFlattening

    class WithoutCache(DataCollatorWithFlattening):
        """Its batches also say use_cache=False: masking_utils looks for packed sequences only in a
        forward without a KV cache, and a model whose config has use_cache on (SmolLM2's, the tiny
        one's) makes one in training too, and then every example attends to the ones before it."""

        def __call__(self, features, return_tensors=None, separator_id=None):
            return {**super().__call__(features, return_tensors, separator_id), "use_cache": False}

    class LossPositionsOnly(DataCollatorForSeq2Seq):
        def __call__(self, features, return_tensors=None):
            return only_loss_positions(super().__call__(features, return_tensors))

    if packed:
        return WithoutCache(return_position_ids=True, separator_id=IGNORED)
    padded = LossPositionsOnly if loss_logits_only else DataCollatorForSeq2Seq
    return padded(tokenizer, padding=True, label_pad_token_id=IGNORED)


def build_trainer(model, tokenizer, train: TrainConfig, train_rows, val_rows, output_dir: Path, callbacks: list):
    from transformers import EarlyStoppingCallback, Trainer

    callbacks = [*callbacks, MarkCompleteCheckpoints()]  # what makes a checkpoint resumable
    if train.early_stopping_patience is not None:
        callbacks = [*callbacks, EarlyStoppingCallback(early_stopping_patience=train.early_stopping_patience)]
    packed = packs(model, train)
    args = training_arguments(dataclasses.replace(train, padding_free=packed), output_dir)
    # one process per device: DataParallel (several GPUs, one process) would split the positions across them
    kept = args.n_gpu <= 1 and keeps_loss_logits_only(model, packed)
    return Trainer(
        model=model,
        args=args,
        train_dataset=token_dataset(train_rows, "train"),
        eval_dataset=token_dataset(val_rows, "val"),
        data_collator=collator(tokenizer, packed, kept),
        compute_loss_func=loss_at_kept_positions if kept else None,
        processing_class=tokenizer,
        callbacks=callbacks,
    )


def kept_val_loss(trainer) -> float:
    """The val loss of the model training keeps: the best checkpoint's where the Trainer loaded it at
    the end (early stopping), else the final step's where that step was evaluated; only otherwise one
    more pass over val. On the default run a val pass is ~30 s of the train stage, and it would
    compute a figure the Trainer already has."""
    state = trainer.state
    if trainer.args.load_best_model_at_end and state.best_metric is not None:
        return state.best_metric
    evaluations = [row for row in state.log_history if "eval_loss" in row]
    if evaluations and evaluations[-1]["step"] == state.global_step:
        return evaluations[-1]["eval_loss"]
    return trainer.evaluate()["eval_loss"]
