"""The alignment run: a TRL trainer as it is, its config written from tunelab's own.

TRL 1.16's configs default to bf16=True and gradient_checkpointing=True; every one here gets
precision and checkpointing from ``align`` (bf16 only where the GPU has it), so a CPU run is fp32
and no TRL default decides what runs. The model is the merged SFT model; TRL adds the new LoRA
adapter (``peft_config``) and, with no ``ref_model``, disables it to compute the reference.
"""

from pathlib import Path

from transformers import TrainerCallback

from tunelab.alignment.methods import PAIRS, PROMPTS, UNPAIRED, AlignMethod
from tunelab.alignment.preferences import unpaired
from tunelab.alignment.rewards import check_rewards, reward_functions
from tunelab.config.schema import AlignConfig
from tunelab.evaluation.tasks import Task
from tunelab.training.run import precision_flags
from tunelab.training.strategies import lora_options_config


def trl_config(method: AlignMethod, align: AlignConfig, output_dir: Path, **more):
    """The method's TRL config: the shared optimisation settings, the method's own, then align.extra_args."""
    _, config_class = method.trainer()
    return config_class(**trl_arguments(method, align, output_dir, **more), **align.extra_args)


def trl_arguments(method: AlignMethod, align: AlignConfig, output_dir: Path, **more) -> dict:
    """What tunelab sets of the method's TRL config (align.extra_args may set any other field)."""
    return dict(
        output_dir=str(output_dir),
        learning_rate=align.learning_rate,
        lr_scheduler_type="constant_with_warmup",
        warmup_steps=0.1,  # a float below 1 is a ratio of the steps
        max_steps=align.max_steps,
        per_device_train_batch_size=align.batch_size,
        gradient_accumulation_steps=align.gradient_accumulation_steps,
        gradient_checkpointing=align.gradient_checkpointing,
        logging_steps=align.logging_steps,
        save_strategy="steps",
        save_steps=align.save_steps,
        save_total_limit=2,
        seed=align.seed,
        data_seed=align.seed,
        report_to="none",  # the stage's callback logs to its own MLflow run
        dataloader_num_workers=0,
        **precision_flags(align.precision),
        **method.options(align),
        **more,
    )


def method_dataset(method: AlignMethod, pairs: list[dict], rows: list[dict]):
    """What the method learns from, as a datasets.Dataset in TRL's format."""
    from datasets import Dataset

    if method.data == PAIRS:
        return Dataset.from_list([{field: pair[field] for field in ("prompt", "chosen", "rejected")} for pair in pairs])
    if method.data == UNPAIRED:
        return Dataset.from_list(unpaired(pairs))  # a file's unpaired rows, or the pairs split
    assert method.data == PROMPTS, method.data
    return Dataset.from_list([{"prompt": row["prompt"], "references": row["references"], "choices": row["choices"]}
                              for row in rows])


def build_align_trainer(method: AlignMethod, align: AlignConfig, model, tokenizer, task: Task, pairs: list[dict],
                        rows: list[dict], output_dir: Path, callbacks: list):
    """The TRL trainer of ``method`` on ``model`` (the merged SFT model), ready to train."""
    trainer_class, _ = method.trainer()
    extra, more = {}, {}
    if method.rewarded:
        functions, weights = reward_functions(align.rewards, task, align.max_completion_length)
        check_rewards(functions, rows)
        extra["reward_funcs"], more["reward_weights"] = functions, weights
    args = trl_config(method, align, output_dir, **more)
    return trainer_class(model=model, args=args, train_dataset=method_dataset(method, pairs, rows),
                         processing_class=tokenizer, peft_config=lora_options_config(align.lora), callbacks=callbacks, **extra)


class AlignTelemetry(TrainerCallback):
    """The method's per-step figures (AlignMethod.curves) to MLflow as TRL logs them, and a summary."""

    def __init__(self, run, curves: tuple[str, ...]):
        self.run, self.curves = run, curves

    def on_log(self, args, state, control, logs=None, **kwargs):
        if state.is_world_process_zero and logs:
            figures = {key: float(logs[key]) for key in self.curves if key in logs}
            if figures:
                self.run.log_metrics(figures, step=state.global_step)

    def summary(self, log_history: list[dict]) -> dict:
        """The last logged value of each figure, and the mean share of zero-variance reward groups
        (GRPO/RLOO: the steps whose groups taught nothing)."""
        last = {key: next((row[key] for row in reversed(log_history) if key in row), None) for key in self.curves}
        figures = {f"final_{key.replace('/', '_')}": round(value, 4) for key, value in last.items() if value is not None}
        zero = [row["frac_reward_zero_std"] for row in log_history if "frac_reward_zero_std" in row]
        if zero:
            figures["zero_variance_group_share"] = round(sum(zero) / len(zero), 4)
        return figures
