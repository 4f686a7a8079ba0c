"""A GGUF variant's cost natively on llama.cpp, through llama-cpp-python (the optional extra ``llama``).

tunelab evaluates a GGUF through transformers' loader, which dequantizes it to float32: the
answers are the file's, the speed is fp32's. What a llama.cpp or Ollama user gets is llama.cpp's
own kernels on the quantized blocks, and this measures that: the same prompt (as token ids, so
both engines read the same input), the same new-token count, repeats and thread count as the
in-process benchmark, greedy. llama-cpp-python's ``Llama`` decodes one sequence at a time, so
only batch 1 is measured.

It runs in a fresh interpreter of its own: a llama.cpp build can die on an instruction the
machine refuses (a VM whose CPU lists AMX but faults on its tiles: SIGILL in ``tileloadd``),
and that must cost this one figure, with what to do, not every variant's benchmark.
"""

import importlib.util
import json
import signal
import statistics
import subprocess
import sys
import time
from importlib.metadata import version
from pathlib import Path
from typing import Optional

from tunelab.benchmarking.stats import latency_ms, step_latencies, tokens_per_second
from tunelab.errors import TunelabError

INSTALL = "pip install -e '.[llama]' (it compiles llama.cpp, a few minutes on 2 cores)"
WITHOUT_AMX = ("CMAKE_ARGS='-DGGML_NATIVE=OFF -DGGML_AVX512=ON -DGGML_AVX512_VBMI=ON -DGGML_AVX512_VNNI=ON "
               "-DGGML_AVX512_BF16=ON' pip install --force-reinstall --no-deps --no-cache-dir llama-cpp-python==0.3.36")
"""A build for all of this CPU but AMX (llama.cpp's native build uses AMX wherever the CPU lists it)."""


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


def costs(gguf: Path, prompt: list[int], new_tokens: int, repeats: int, threads: int) -> dict:
    """In this process: load time, time to first token, per-token latency and batch-1 tokens/s."""
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
    return {"engine": f"llama.cpp (llama-cpp-python {version('llama-cpp-python')})", "threads": threads,
            "load_seconds": round(load_seconds, 2), **latency_ms(first, gaps),
            "tokens_per_second": {"1": round(statistics.median(speeds), 2)}}


def measure_native(gguf: Path, prompt: list[int], new_tokens: int, repeats: int, threads: int) -> dict:
    """``costs`` in a fresh interpreter; ``{"skipped": why}`` where llama-cpp-python is not installed or
    llama.cpp died there."""
    if reason := unavailable():
        return {"skipped": reason}
    source = str(Path(__file__).resolve().parents[2])  # this tree's tunelab, as the stage imports it
    request = {"gguf": str(gguf), "prompt": prompt, "new_tokens": new_tokens, "repeats": repeats, "threads": threads}
    result = subprocess.run([sys.executable, "-c", f"import sys; sys.path.insert(0, {source!r}); "
                             "from tunelab.benchmarking.native_gguf import main; main()", json.dumps(request)],
                            capture_output=True, text=True)
    if result.returncode < 0:
        return {"skipped": death(-result.returncode)}
    if result.returncode != 0:
        raise TunelabError(f"llama.cpp could not measure {gguf}: {(result.stderr.strip().splitlines() or ['no output'])[-1]}")
    return json.loads(result.stdout.splitlines()[-1])


def death(signal_number: int) -> str:
    """What a llama.cpp process killed by ``signal_number`` means, and what to do."""
    name = signal.Signals(signal_number).name
    if signal_number == signal.SIGILL:
        return (f"llama.cpp died of {name}: its build uses an instruction this machine refuses (a VM that lists AMX "
                f"but faults on its tiles, for one); rebuild it for this CPU without AMX: {WITHOUT_AMX}")
    return f"llama.cpp died of {name}"


def main() -> None:
    request = json.loads(sys.argv[1])
    print(json.dumps(costs(Path(request["gguf"]), request["prompt"], request["new_tokens"], request["repeats"],
                           request["threads"])))
