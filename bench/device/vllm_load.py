"""vLLM on the lent GPU: serving tokens/s at 1, 4 and 16 requests in flight (bench/device/run.sh).

Serves models/base (SmolLM2-135M's architecture; random weights decode to no EOS, so every request
generates its whole budget: the decode-bound case) with the vLLM installed on the machine, and
runs the load_test stage's load test (the official openai client, streamed chats of the default
test split's first rows asking for a paragraph) against it. Results: $OUT/vllm_load.json.
"""

import asyncio
import json
import os
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO / "src"))

from tunelab.config.compose import compose_conf  # noqa: E402
from tunelab.config.load import to_section  # noqa: E402
from tunelab.config.schema import DataConfig, PromptConfig  # noqa: E402
from tunelab.io.jsonl import read_jsonl  # noqa: E402
from tunelab.paths import Paths  # noqa: E402
from tunelab.serving.load_test import batching_gain, load_test, served_chats  # noqa: E402

PORT = 8011
LEVELS = [1, 4, 16]


def main() -> None:
    paths, out = Paths(REPO), Path(os.environ.get("OUT", "/tmp/out"))
    params = compose_conf(REPO / "conf")
    data = to_section(DataConfig, "data", params["data"])
    rows = read_jsonl(paths.split(paths.prepared, "test"))[:64]
    chats = served_chats(rows, to_section(PromptConfig, "prompt", params["prompt"]), data.labels,
                         decode_instruction="Retell this review in a long paragraph: ")
    command = [sys.executable, "-m", "vllm.entrypoints.openai.api_server", "--model", str(paths.base_model),
               "--served-model-name", "base", "--host", "127.0.0.1", "--port", str(PORT), "--max-model-len", "2048",
               "--gpu-memory-utilization", "0.5"]
    began = time.perf_counter()
    with open(out / "vllm_server.log", "w") as log:
        server = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT)
        try:
            while time.perf_counter() - began < 240:
                try:
                    urllib.request.urlopen(f"http://127.0.0.1:{PORT}/health", timeout=2)
                    break
                except OSError:
                    if server.poll() is not None:
                        raise SystemExit(f"vLLM exited with {server.returncode}: see vllm_server.log")
                    time.sleep(2)
            startup = time.perf_counter() - began
            levels = asyncio.run(load_test(f"http://127.0.0.1:{PORT}/v1", "base", chats, LEVELS, requests=32,
                                           max_tokens=128, deadline_seconds=120, api_key="EMPTY"))
        finally:
            server.terminate()
            server.wait(timeout=60)
    result = {"startup_seconds": round(startup, 1), "levels": levels, "batching_gain": batching_gain(levels)}
    (out / "vllm_load.json").write_text(json.dumps(result, indent=2) + "\n")
    for level in levels:
        print(f"vllm: {level['concurrency']} in flight: {level['tokens_per_second']} tokens/s, "
              f"TTFT p50 {level['ttft_p50_ms']} ms, errors {level['errors']}")


if __name__ == "__main__":
    main()
