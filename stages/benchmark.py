"""Stage benchmark: what each deployable variant costs to serve, each in a fresh process.

    dvc exp run                                      # every variant the quantize stage made, plus trained (and aligned)
    python stages/benchmark.py --measure out/ merged int8_dynamic   # what the stage runs: out/VARIANT.json

Per variant: size on disk, load time, peak memory, time to first token and per-token latency
p50/p95 at batch 1, throughput (tokens/s) at each bench.batch_sizes with the KV cache (batch 1's
read from the latency runs), on the first test prompts; one warm-up, bench.repeats timed runs,
medians. A GGUF variant is also measured natively on llama.cpp where llama-cpp-python is installed (``llama_cpp``, batch 1;
tunelab.benchmarking.native_gguf), else the record says how to install it. With the environment's
fingerprint, in metrics/bench.json. Cost only: the report joins it to each variant's accuracy.
"""

import argparse
import dataclasses
import json
import multiprocessing
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))  # this tree's code: see tunelab.stage

from tunelab.benchmarking.environment import fingerprint
from tunelab.config.load import read_params, to_section
from tunelab.config.schema import BenchConfig
from tunelab.errors import TunelabError
from tunelab.evaluation.batching import pad_id
from tunelab.io.files import folder_size_mb
from tunelab.io.jsonl import read_jsonl
from tunelab.paths import ALIGNED, PATHS, TRAINED, Paths, is_quantized
from tunelab.prompts.formatting import load_tokenizer
from tunelab.records import QuantizeRecord, read_record
from tunelab.stage import run_stage, run_tracked
from tunelab.tracking.mlflow_run import StageRun

PROMPTS = 16  # the first test prompts, cycled to fill larger batches


def measure(paths: Paths, variant: str, settings: BenchConfig) -> dict:
    """In this process: load the variant, then time it (the stage runs this once per fresh process)."""
    import torch
    from tqdm import tqdm

    from tunelab.benchmarking.inference import device_of, latency, left_padded, run_generation, throughput
    from tunelab.benchmarking.memory import peak_gpu_mb, peak_rss_mb
    from tunelab.benchmarking.native_gguf import measure_native
    from tunelab.models.loading import deploy_recipe, load_variant, trained_recipe

    tokenizer = load_tokenizer(paths.base_model)
    test = read_jsonl(paths.split(paths.formatted, "test"), required=("input_ids", "prompt_length"))
    prompts = [row["input_ids"][: row["prompt_length"]] for row in test[:PROMPTS]]
    started = time.perf_counter()
    model = load_variant(variant, paths)
    load_seconds = time.perf_counter() - started
    pad = pad_id(tokenizer)
    run_generation(model, left_padded(prompts[:1], pad, device_of(model)), 4, pad)  # warm-up
    size = folder_size_mb(paths.model(variant))
    if variant == TRAINED and trained_recipe(paths.trained_model)["adapter"]:
        size += folder_size_mb(paths.base_model)  # what you ship: the adapter and the base it applies to
    # on stdout: the stage reads its child's stderr for the error it may end with
    runs = settings.repeats * (1 + sum(size != 1 for size in settings.batch_sizes))  # batch 1: the latency runs
    with tqdm(total=runs, desc=f"benchmark: {variant}", unit="run", file=sys.stdout) as progress:
        batch_one, batch_one_runs = latency(model, prompts[0], settings.new_tokens, settings.repeats, pad, progress.update)
        measured = {"size_mb": round(size, 1), "load_seconds": round(load_seconds, 2), **batch_one,
                    "tokens_per_second": throughput(model, prompts, settings.batch_sizes, settings.new_tokens,
                                                    settings.repeats, pad, progress.update, {1: batch_one_runs}),
                    "peak_rss_mb": peak_rss_mb(), **({"peak_gpu_mb": gpu} if (gpu := peak_gpu_mb()) is not None else {})}
    if is_quantized(variant) and (recipe := deploy_recipe(paths.model(variant)))["loader"] == "gguf":
        del model  # llama.cpp loads its own copy
        measured["llama_cpp"] = measure_native(paths.model(variant) / "model" / recipe["gguf_file"], prompts[0],
                                               settings.new_tokens, settings.repeats, torch.get_num_threads())
    return measured


def made_variants(paths: Paths) -> list[str]:
    """The trained model, the aligned one where alignment ran (the variants are made from it), the variants."""
    made = read_record(QuantizeRecord, paths.quantize_metrics, "quantize")
    return [TRAINED, *([ALIGNED] if made.source == ALIGNED else []), *made.made()]


def measure_each(folder: Path, variants: list[str]) -> None:
    """``measure`` each variant into ``folder``/VARIANT.json, each in a process of its own.

    Run in a fresh interpreter (the stage's child). On Linux it imports the libraries once and forks
    a process per variant: each holds nothing of another variant, and its peak memory counts the
    same imports a fresh interpreter would, without paying for them per variant (~8 s each on 2
    cores). Forked from here, not from the stage's process: that one runs MLflow's threads. Where
    fork is unsafe (macOS) each variant gets a fresh interpreter (spawn)."""
    import peft  # noqa: F401 - with torch and transformers: what every variant's process imports first

    settings = to_section(BenchConfig, "bench", read_params(check_current=False).get("bench"))
    context = multiprocessing.get_context("fork" if sys.platform == "linux" else "spawn")
    for variant in variants:
        print(f"benchmark: {variant} ...", flush=True)
        process = context.Process(target=measure_into, args=(variant, settings, folder / f"{variant}.json"))
        process.start()
        process.join()
        if process.exitcode != 0:
            raise TunelabError(f"benchmark of {variant} failed (exit code {process.exitcode}), see above")


def measure_into(variant: str, settings: BenchConfig, out: Path) -> None:
    r = measure(PATHS, variant, settings)  # the child runs in the project's root
    out.write_text(json.dumps(r))
    print(f"benchmark: {variant}: {r['size_mb']} MB, {cost_line(r)}", flush=True)
    if native := r.get("llama_cpp"):
        print(f"benchmark: {variant} on llama.cpp: {native['skipped'] if 'skipped' in native else cost_line(native)}",
              flush=True)


def cost_line(r: dict) -> str:
    return (f"load {r['load_seconds']} s, TTFT {r['ttft_ms']} ms, token p50/p95 {r['token_latency_ms']['p50']}/"
            f"{r['token_latency_ms']['p95']} ms, tokens/s by batch {r['tokens_per_second']}")


def measure_in_fresh_processes(paths: Paths, variants: list[str]) -> dict[str, dict]:
    with tempfile.TemporaryDirectory() as folder:
        result = subprocess.run([sys.executable, Path(__file__).resolve(), "--measure", folder, *variants], text=True,
                                cwd=paths.root, stdout=sys.stdout, stderr=subprocess.PIPE)
        if result.returncode != 0:
            raise TunelabError(f"benchmark failed:\n{result.stderr[-2000:]}")
        return {variant: json.loads((Path(folder) / f"{variant}.json").read_text()) for variant in variants}


def run(paths: Paths, settings: BenchConfig, tracking: StageRun) -> None:
    """Time each made variant under ``paths`` (each in a fresh process) into ``paths.bench_metrics``."""
    results = measure_in_fresh_processes(paths, made_variants(paths))
    for variant, r in results.items():
        tracking.log_metrics({f"{variant}.token_latency_p50_ms": r["token_latency_ms"]["p50"],
                              f"{variant}.tokens_per_second_batch1": r["tokens_per_second"][str(settings.batch_sizes[0])]})
    tracking.write_metrics(paths.bench_metrics, {"environment": fingerprint(),
                                                 "settings": dataclasses.asdict(settings) | {"prompts": PROMPTS},
                                                 "variants": results})
    tracking.log_artifact(paths.bench_metrics)


if __name__ == "__main__":
    parser = argparse.ArgumentParser()
    parser.add_argument("--measure", nargs="+", metavar=("FOLDER", "VARIANT"))
    args = parser.parse_args()
    if args.measure:
        run_stage(lambda: measure_each(Path(args.measure[0]), args.measure[1:]))
    else:
        run_stage(lambda: run_tracked("benchmark", run, bench=BenchConfig))
