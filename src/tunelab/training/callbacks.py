"""Trainer callbacks: what the train stage records while the trainer runs as it is."""

import gzip
import os
import shutil
import statistics
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

import torch
from transformers import TrainerCallback

from tunelab.benchmarking.memory import peak_memory_mb
from tunelab.errors import TunelabError
from tunelab.training.pruning import PRUNED_AT

KINETO_LEVEL = "KINETO_LOG_LEVEL"

LOGGED = ("loss", "learning_rate", "grad_norm", "eval_loss")


class TrainingTelemetry(TrainerCallback):
    """Per-log-step loss, lr, grad norm, tokens/s, MFU and peak memory, to MLflow and to curves.

    The tokens/s window restarts after each evaluation and checkpoint, so it measures training.
    """

    def __init__(self, run, flops_per_token: float, peak_flops: float, measure_peak: Callable[[], float] | None = None):
        self.run = run
        self.flops_per_token = flops_per_token
        self.peak_flops = peak_flops
        self.measure_peak = measure_peak
        """Measures the peak again when training ends: the best sample is the peak, since a core
        another process held during one sample only ever lowers it."""
        self.curve: list[dict] = []
        self._window_start = time.perf_counter()
        self._window_tokens = 0

    def _restart_window(self, state) -> None:
        self._window_start = time.perf_counter()
        self._window_tokens = state.num_input_tokens_seen

    def on_train_begin(self, args, state, control, **kwargs):
        self._restart_window(state)

    def on_evaluate(self, args, state, control, **kwargs):
        self._restart_window(state)

    def on_save(self, args, state, control, **kwargs):
        self._restart_window(state)

    def on_log(self, args, state, control, logs=None, **kwargs):
        if not state.is_world_process_zero or not logs:
            return
        metrics = {key: float(logs[key]) for key in LOGGED if key in logs}
        if "loss" in logs:
            seconds = time.perf_counter() - self._window_start
            tokens = state.num_input_tokens_seen - self._window_tokens
            if seconds > 0 and tokens > 0:
                metrics["tokens_per_second"] = tokens / seconds
                if (mfu := self.mfu(metrics["tokens_per_second"])) is not None:
                    metrics["mfu"] = mfu
            self._restart_window(state)
        metrics["peak_memory_mb"] = peak_memory_mb()
        self.run.log_metrics(metrics, step=state.global_step)
        self.curve.append({"step": state.global_step, **metrics})

    def on_train_end(self, args, state, control, **kwargs):
        if self.measure_peak is not None:
            self.peak_flops = max(self.peak_flops, self.measure_peak())

    def mfu(self, tokens_per_second: float) -> float | None:
        """Achieved FLOP/s over the peak; None where the achieved figure exceeds the peak, which
        then was measured under contention and says nothing (never an MFU above 1)."""
        share = tokens_per_second * self.flops_per_token / self.peak_flops
        return share if share <= 1 else None

    def summary(self, log_history: list[dict]) -> dict:
        """Run-level figures: the last logged train loss, from the Trainer's ``log_history`` (a
        resumed run restores it from the checkpoint, so this is the whole run's even when no step
        was left to train), and this process's median throughput window and peak memory.

        (The Trainer's own average loss covers only the steps since a resume.)
        """
        windows = [row["tokens_per_second"] for row in self.curve if "tokens_per_second" in row]
        median = statistics.median(windows) if windows else None
        return {
            "train_loss_final": round(next(r["loss"] for r in reversed(log_history) if "loss" in r), 4),
            "tokens_per_second": round(median, 1) if median else None,
            "mfu": round(mfu, 4) if (mfu := median and self.mfu(median)) else None,
            "flops_per_token": self.flops_per_token,
            "matmul_peak_gflops": round(self.peak_flops / 1e9, 1),
            # the achieved FLOP/s beat every peak sample: another process held a core while they were taken
            "matmul_peak_contended": bool(median) and self.mfu(median) is None,
            "peak_memory_mb": round(max([peak_memory_mb()] + [row["peak_memory_mb"] for row in self.curve]), 1),
        }


@contextmanager
def quiet_kineto() -> Iterator[None]:
    """kineto writes "USDT ... profiler_start/stop" to stderr at its top log level; a level past it,
    read when its trace starts, keeps the console to the stage's own lines (a trace that fails still
    raises in Python). Set only meanwhile: the stage's work also runs in-process, where the caller's
    environment, which its later subprocesses inherit, must stay as it was. A level the user set wins."""
    previous = os.environ.get(KINETO_LEVEL)
    os.environ[KINETO_LEVEL] = previous or "6"
    try:
        yield
    finally:
        if previous is None:
            os.environ.pop(KINETO_LEVEL, None)


class ProfileSteps(TrainerCallback):
    """A torch.profiler trace of a few optimizer steps (after a warm-up step), gzipped."""

    def __init__(self, steps: int, trace_path: Path, first_step: int = 2):
        self.steps, self.trace_path, self.first_step = steps, trace_path, first_step
        self.profiler = None
        self.done = steps <= 0

    def on_step_begin(self, args, state, control, **kwargs):
        if self.done or self.profiler is not None or state.global_step < self.first_step:
            return
        activities = [torch.profiler.ProfilerActivity.CPU]
        if torch.cuda.is_available():
            activities.append(torch.profiler.ProfilerActivity.CUDA)
        # Memory events on CUDA only: on CPU, torch's allocator logs "Memory block of unknown size was
        # allocated before the profiling started" for every tensor made before the trace and freed in
        # it (the model's), and CPU memory is in the stage's peak RSS figure anyway.
        self.profiler = torch.profiler.profile(activities=activities, profile_memory=torch.cuda.is_available())
        with quiet_kineto():
            self.profiler.__enter__()
        self._until = state.global_step + self.steps

    def on_step_end(self, args, state, control, **kwargs):
        if self.profiler is None or state.global_step < self._until:
            return
        with quiet_kineto():
            self.profiler.__exit__(None, None, None)
        raw = self.trace_path.with_suffix("")
        self.profiler.export_chrome_trace(str(raw))
        with raw.open("rb") as source, gzip.open(self.trace_path, "wb") as target:
            shutil.copyfileobj(source, target)
        raw.unlink()
        self.profiler, self.done = None, True


class OptunaPruning(TrainerCallback):
    """Reports each evaluation's val loss to ``trial``; stops the stage when the pruner says so."""

    def __init__(self, trial):
        self.trial = trial

    def on_evaluate(self, args, state, control, metrics=None, **kwargs):
        if not state.is_world_process_zero or not metrics or "eval_loss" not in metrics or state.global_step == 0:
            return  # step 0 is the evaluation before training: every trial's is the base model's
        self.trial.report(metrics["eval_loss"], state.global_step)
        if self.trial.should_prune():
            self.trial.set_user_attr(PRUNED_AT, state.global_step)
            raise TunelabError(f"train: pruned by Optuna at step {state.global_step}: val loss "
                               f"{metrics['eval_loss']:.4f} is worse than the median of earlier trials at that step")
