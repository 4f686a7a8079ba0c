"""Stage load_test: the served variant under load, through the official openai client on loopback.

    dvc exp run -S serve.load_test.enabled=true          # off by default: minutes of both cores
    tunelab serve merged                                 # the same server, to use yourself

Starts `serve.variant` on `serve.engine` (auto: vLLM on a CUDA GPU, else transformers serve's
handlers with continuous batching), waits for /health, then at each serve.load_test.concurrency
sends serve.load_test.requests streamed chat completions of the test prompts, two workloads:
``task`` (the prompts as the task sends them) and ``decode`` (each row's text, asked for a
paragraph about it, so answers run to max_tokens). Per level: tokens/s, TTFT and latency p50/p95, errors. The server
is stopped with SIGTERM after. Off, it records that it was skipped; the report says so.
"""

import asyncio
import dataclasses
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))  # this tree's code: see tunelab.stage

from tunelab.benchmarking.environment import fingerprint
from tunelab.config.load import read_params, to_section
from tunelab.config.schema import DataConfig, PromptConfig, ServeConfig
from tunelab.errors import TunelabError
from tunelab.io.atomic import atomic_dir
from tunelab.io.jsonl import read_jsonl
from tunelab.paths import PATHS, Paths
from tunelab.records import ServeRecord, prepared_data
from tunelab.serving.engines import Server, choose
from tunelab.serving.load_test import batching_gain, load_test, save_load_test_plots, served_chats
from tunelab.stage import run_stage
from tunelab.tracking.mlflow_run import StageRun, stage_run

SKIPPED = "serve.load_test.enabled is false (dvc exp run -S serve.load_test.enabled=true runs it)"


def workloads(paths: Paths, settings: ServeConfig, prompt: PromptConfig, data: DataConfig) -> dict[str, list[list[dict]]]:
    rows = read_jsonl(paths.split(paths.prepared, "test"))[: settings.load_test.requests]
    if not rows:
        raise TunelabError(f"{paths.split(paths.prepared, 'test')}: no test rows to send")
    return {"task": served_chats(rows, prompt, data.labels),
            "decode": served_chats(rows, prompt, data.labels, settings.load_test.decode_instruction)}


def measure(paths: Paths, settings: ServeConfig, prompt: PromptConfig, data: DataConfig) -> ServeRecord:
    load = settings.load_test
    engine, served = choose(settings, paths)
    chats = workloads(paths, settings, prompt, data)  # before the server starts: a template error costs nothing
    base_url = f"http://{settings.host}:{settings.port}/v1"
    print(f"load_test: serving {served.name} on {engine.name} at {base_url}", flush=True)
    results = {}
    with tempfile.TemporaryDirectory() as logs, Server(engine.command(served, settings), base_url, Path(logs) / "server.log"):
        for workload, prompts in chats.items():
            results[workload] = asyncio.run(load_test(base_url, served.name, prompts, load.concurrency, load.requests,
                                                      load.max_tokens, load.deadline_seconds))
            for level in results[workload]:
                print(f"load_test: {workload} at {level['concurrency']}: {level['tokens_per_second']} tokens/s, TTFT p50 "
                      f"{level['ttft_p50_ms']} ms, latency p50/p95 {level['latency_p50_ms']}/{level['latency_p95_ms']} "
                      f"ms, {level['errors']} errors", flush=True)
    return ServeRecord(variant=settings.variant, engine=engine.name, settings=dataclasses.asdict(settings),
                       workloads=results, batching_gain={w: batching_gain(levels) for w, levels in results.items()})


def run(paths: Paths, settings: ServeConfig, prompt: PromptConfig, data: DataConfig, tracking: StageRun) -> None:
    """Serve the variant under ``paths`` and load-test it at each concurrency (or record that it is off)."""
    with atomic_dir(paths.serve_plots) as plots:
        record = measure(paths, settings, prompt, data) if settings.load_test.enabled else ServeRecord(skipped=SKIPPED)
        for path in save_load_test_plots(record.workloads, plots):
            tracking.log_artifact(path, "load_test")
        for workload, gain in record.batching_gain.items():
            tracking.log_metrics({f"{workload}.batching_gain": gain} if gain is not None else {})
            for level in record.workloads[workload]:
                tracking.log_metrics({f"{workload}.c{level['concurrency']}.tokens_per_second": level["tokens_per_second"],
                                      f"{workload}.c{level['concurrency']}.errors": level["errors"]})
        measured_on = {} if record.skipped else {"environment": fingerprint()}  # skipped: nothing was measured
        tracking.write_metrics(paths.serve_metrics, dataclasses.asdict(record) | measured_on)
        tracking.log_artifact(paths.serve_metrics)


def main() -> None:
    params = read_params()
    settings = to_section(ServeConfig, "serve", params.get("serve"))
    prompt = to_section(PromptConfig, "prompt", params.get("prompt"))
    data = prepared_data(to_section(DataConfig, "data", params.get("data")))
    with stage_run("load_test", params, sections=("serve",)) as tracking:
        run(PATHS, settings, prompt, data, tracking)


if __name__ == "__main__":
    run_stage(main)
