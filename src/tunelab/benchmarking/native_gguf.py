"""A GGUF variant's cost natively on llama.cpp, through llama-cpp-python (the optional extra ``llama``).

tunelab evaluates a GGUF through transformers' loader, which dequantizes it to float32: the
answers are the file's, the speed is fp32's. What a llama.cpp or Ollama user gets is llama.cpp's
own kernels on the quantized blocks, and this measures that: the same prompts (as token ids, so
both engines read the same input), the same new-token count, repeats and thread count as the
in-process benchmark, greedy. llama-cpp-python's ``Llama`` decodes one sequence at a time, so
only batch 1 is measured.
"""

import importlib.util
import statistics
import time
from pathlib import Path
from typing import Optional

from tunelab.benchmarking.stats import step_latencies, summary_ms, tokens_per_second

INSTALL = "pip install -e '.[llama]' (it compiles llama.cpp, a few minutes on 2 cores)"


def unavailable() -> Optional[str]:
    """Why llama.cpp cannot measure here, or None."""
    if importlib.util.find_spec("llama_cpp") is None:
        return f"llama-cpp-python is not installed: {INSTALL}"
    return None


def load(gguf: Path, context: int, threads: int):
    from llama_cpp import Llama

    return Llama(model_path=str(gguf), n_ctx=context, n_threads=threads, n_threads_batch=threads, verbose=False)


def greedy_token_times(llm, prompt: list[int], new_tokens: int) -> tuple[list[int], float, list[float]]:
    """Decode exactly ``new_tokens`` greedily: the tokens, the start time and each token's arrival.

    ``reset`` first: llama-cpp-python otherwise reuses the KV cache of a prompt it has just seen,
    and every repeat after the first would skip the prefill."""
    llm.reset()
    tokens, times = [], []
    started = time.perf_counter()
    for token in llm.generate(prompt, top_k=1, temp=0.0, repeat_penalty=1.0):  # an endless generator: we stop it
        times.append(time.perf_counter())
        tokens.append(token)
        if len(tokens) == new_tokens:
            break
    return tokens, started, times


def measure_native(gguf: Path, prompt: list[int], new_tokens: int, repeats: int, threads: int) -> dict:
    """Load time, time to first token, per-token latency and batch-1 tokens/s; medians of ``repeats``."""
    started = time.perf_counter()
    llm = load(gguf, len(prompt) + new_tokens, threads)
    load_seconds = time.perf_counter() - started
    greedy_token_times(llm, prompt, 4)  # warm-up
    first, gaps, speeds = [], [], []
    for _ in range(repeats):
        _, begun, times = greedy_token_times(llm, prompt, new_tokens)
        first.append(times[0] - begun)
        gaps += step_latencies(times)
        speeds.append(tokens_per_second(1, new_tokens, times[-1] - begun))
    from importlib.metadata import version

    return {"engine": f"llama.cpp (llama-cpp-python {version('llama-cpp-python')})", "threads": threads,
            "load_seconds": round(load_seconds, 2), "ttft_ms": round(statistics.median(first) * 1000, 2),
            "token_latency_ms": summary_ms(gaps),
            "tokens_per_second": {"1": round(statistics.median(speeds), 2)}}
