"""Inference cost of one model: load time, time to first token, per-token latency, throughput.

Timings use ``time.perf_counter`` around work that has finished: on a GPU every measurement is
closed by ``torch.cuda.synchronize()`` (CUDA work is asynchronous), and peak GPU memory comes
from ``torch.cuda.max_memory_allocated`` (tunelab.benchmarking.memory). Generation decodes exactly ``new_tokens`` per sequence
(``min_new_tokens``), with the KV cache, greedy, so runs are comparable across variants.
"""

import statistics
import time
from collections.abc import Callable

import torch

from tunelab.benchmarking.stats import latency_ms, step_latencies, tokens_per_second
from tunelab.evaluation.batching import left_pad


class TokenClock:
    """A generate() streamer that records when each step's tokens arrive (batch 1)."""

    def __init__(self):
        self.times: list[float] = []

    def put(self, value) -> None:
        synchronize()
        self.times.append(time.perf_counter())

    def end(self) -> None:
        pass


def synchronize() -> None:
    if torch.cuda.is_available():
        torch.cuda.synchronize()


def device_of(model) -> torch.device:
    return next(model.parameters()).device


def left_padded(prompts: list[list[int]], pad: int, device) -> dict:
    ids, mask = left_pad(prompts, pad)
    return {"input_ids": ids.to(device), "attention_mask": mask.to(device)}


@torch.no_grad()
def run_generation(model, inputs: dict, new_tokens: int, pad_id: int, streamer=None) -> float:
    synchronize()
    started = time.perf_counter()
    model.generate(**inputs, max_new_tokens=new_tokens, min_new_tokens=new_tokens, do_sample=False,
                   temperature=None, top_p=None, top_k=None, pad_token_id=pad_id, streamer=streamer)
    synchronize()
    return time.perf_counter() - started


def latency(model, prompt: list[int], new_tokens: int, repeats: int, pad_id: int,
            timed: Callable[[], object] = lambda: None) -> tuple[dict, list[float]]:
    """Batch 1: time to first token and the gaps between later tokens over all repeats, and each
    run's seconds (they are batch 1's throughput too; ``timed`` is called after each run, outside
    its timing: a progress bar's update)."""
    inputs = left_padded([prompt], pad_id, device_of(model))
    first, gaps, runs = [], [], []
    for _ in range(repeats):
        clock = TokenClock()
        started = time.perf_counter()
        runs.append(run_generation(model, inputs, new_tokens, pad_id, streamer=clock))
        first.append(clock.times[1] - started)  # times[0]: the prompt handed to the streamer
        gaps += step_latencies(clock.times[1:])
        timed()
    return latency_ms(first, gaps), runs


def throughput(model, prompts: list[list[int]], batch_sizes: list[int], new_tokens: int, repeats: int,
               pad_id: int, timed: Callable[[], object] = lambda: None,
               measured: dict[int, list[float]] | None = None) -> dict[str, float]:
    """Tokens/s generated at each batch size (median of the repeats), prompts cycled to fill a batch
    (``timed`` as for latency). ``measured``: the seconds of runs already timed at a batch size (the
    latency runs at batch 1), which are not run again."""
    result = {}
    for size in batch_sizes:
        runs = (measured or {}).get(size)
        if runs is None:
            inputs = left_padded([prompts[i % len(prompts)] for i in range(size)], pad_id, device_of(model))
            runs = []
            for _ in range(repeats):
                runs.append(run_generation(model, inputs, new_tokens, pad_id))
                timed()
        result[str(size)] = round(tokens_per_second(size, new_tokens, statistics.median(runs)), 2)
    return result
