"""The serving engines side by side on the merged variant: transformers serve (tunelab's app) and
vLLM's CPU build (.venv-vllm), each started the way `tunelab serve` starts it.

    make bench-serve            # after `make run` (it serves models/deploy/merged); builds .venv-vllm

Per engine: start-up time (process start to /health answering), the load test of the load_test
stage (conf/serve's load_test: both workloads, tokens/s, TTFT and latency at each concurrency,
errors), the fuzz table of the serving tests (tests/hostile_requests.py: what status each engine
answered, and whether any was a 5xx), and how many of the test prompts' greedy answers agree
with transformers serve's. Run it alone on the machine. Results: bench/results/serve_engines.json
and .md (or --out).
"""

import argparse
import asyncio
import dataclasses
import json
import sys
import tempfile
import time
import urllib.error
import urllib.request
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(REPO / "src"), str(REPO / "tests")]  # tests/: the fuzz table the serving tests send

from hostile_requests import hostile_requests  # noqa: E402

from tunelab.config.load import read_params, to_section  # noqa: E402
from tunelab.config.schema import DataConfig, PromptConfig, ServeConfig  # noqa: E402
from tunelab.io.jsonl import read_jsonl  # noqa: E402
from tunelab.paths import PATHS  # noqa: E402
from tunelab.records import prepared_data  # noqa: E402
from tunelab.serving.engines import Server, choose  # noqa: E402
from tunelab.serving.guards import API_KEY_VARIABLE  # noqa: E402
from tunelab.serving.load_test import batching_gain, load_test, served_chats  # noqa: E402

KEY = "sk-bench"


def status_of(base_url: str, route: str, body, headers: dict) -> int:
    data = body if isinstance(body, bytes) or body is None else json.dumps(body).encode()
    request = urllib.request.Request(base_url + route, data=data, headers={
        "content-type": "application/json", "authorization": f"Bearer {KEY}", **headers})
    try:
        with urllib.request.urlopen(request, timeout=120) as answer:
            return answer.status
    except urllib.error.HTTPError as error:
        return error.code
    except OSError:
        return 0  # no HTTP answer at all (the connection was closed)


def greedy_answers(base_url: str, name: str, chats: list[list[dict]], max_tokens: int) -> list[str]:
    from openai import OpenAI

    client = OpenAI(base_url=base_url, api_key=KEY, max_retries=0, timeout=120)
    return [client.chat.completions.create(model=name, messages=chat, max_tokens=max_tokens, temperature=0.0)
            .choices[0].message.content for chat in chats]


def measure(engine_name: str, settings: ServeConfig, workloads: dict, logs: Path) -> dict:
    settings = dataclasses.replace(settings, engine=engine_name)
    engine, served = choose(settings)
    base_url = f"http://{settings.host}:{settings.port}/v1"
    began = time.perf_counter()
    with Server(engine.command(served, settings), base_url, logs / f"{engine_name}.log", start_timeout=900,
                env={API_KEY_VARIABLE: KEY}):
        startup = time.perf_counter() - began
        print(f"{engine_name}: up in {startup:.0f} s", flush=True)
        load = settings.load_test
        levels = {workload: asyncio.run(load_test(base_url, served.name, chats, load.concurrency, load.requests,
                                                  load.max_tokens, load.deadline_seconds, api_key=KEY))
                  for workload, chats in workloads.items()}
        fuzz = {case[0]: status_of(base_url, *case[1:4])
                for case in hostile_requests(served.name, "Is this review positive? A fine film.", 8192,
                                             settings.max_body_bytes, KEY)}
        greedy = greedy_answers(base_url, served.name, workloads["task"], 8)
    return {"engine": engine_name, "startup_seconds": round(startup, 1), "load_test": levels,
            "batching_gain": {workload: batching_gain(runs) for workload, runs in levels.items()},
            "fuzz": fuzz, "greedy": greedy}


def markdown(results: list[dict]) -> str:
    lines = ["| engine | workload | in flight | tokens/s | TTFT p50 ms | latency p50 ms | errors |",
             "|---|---|---:|---:|---:|---:|---:|"]
    for result in results:
        for workload, levels in result["load_test"].items():
            lines += [f"| {result['engine']} | {workload} | {level['concurrency']} | {level['tokens_per_second']} | "
                      f"{level['ttft_p50_ms']} | {level['latency_p50_ms']} | {level['errors']} |" for level in levels]
    lines += ["", "| engine | start-up s | batching gain (task / decode) | fuzz: 4xx / 2xx / 5xx of "
              f"{len(results[0]['fuzz'])} | greedy answers equal to transformers' |", "|---|---:|---|---|---:|"]
    reference = results[0]["greedy"]
    for result in results:
        statuses = list(result["fuzz"].values())
        counts = "/".join(str(sum(low <= s < low + 100 for s in statuses)) for low in (400, 200, 500))
        agree = sum(a == b for a, b in zip(result["greedy"], reference))
        gains = " / ".join(str(gain) for gain in result["batching_gain"].values())
        lines.append(f"| {result['engine']} | {result['startup_seconds']} | {gains} | {counts} | {agree} of {len(reference)} |")
    cases = list(results[0]["fuzz"])
    lines += ["", "| fuzz case | " + " | ".join(r["engine"] for r in results) + " |",
              "|---|" + "---:|" * len(results)]
    lines += [f"| {case} | " + " | ".join(str(r["fuzz"][case]) for r in results) + " |" for case in cases]
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--engines", nargs="+", default=["transformers", "vllm"])
    parser.add_argument("--out", type=Path, default=REPO / "bench/results/serve_engines.json")
    args = parser.parse_args()
    params = read_params()
    settings = to_section(ServeConfig, "serve", params.get("serve"))
    data = prepared_data(to_section(DataConfig, "data", params.get("data")))
    prompt = to_section(PromptConfig, "prompt", params.get("prompt"))
    rows = read_jsonl(PATHS.split(PATHS.prepared, "test"))[: settings.load_test.requests]
    workloads = {"task": served_chats(rows, prompt, data.labels),
                 "decode": served_chats(rows, prompt, data.labels, settings.load_test.decode_instruction)}
    with tempfile.TemporaryDirectory() as logs:
        results = [measure(engine, settings, workloads, Path(logs)) for engine in args.engines]
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(results, indent=2) + "\n")
    args.out.with_suffix(".md").write_text(markdown(results))
    print(markdown(results))
    print(f"wrote {args.out} and {args.out.with_suffix('.md')}")


if __name__ == "__main__":
    main()
