"""A load test a person can rerun: the official ``openai`` client against a live server.

At each concurrency level, ``requests`` streamed chat completions (the test split's first prompts,
cycled) run with at most that many in flight, bounded by a deadline. Per level: generated
tokens/s over the level's wall time, time to first token and latency p50/p95, errors (each
with its message). The batching gain is tokens/s at the highest level over the lowest.
"""

import asyncio
import os
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

from tunelab.benchmarking.stats import percentile
from tunelab.serving.guards import API_KEY_VARIABLE

if TYPE_CHECKING:
    from tunelab.config.schema import PromptConfig


@dataclass(frozen=True)
class Outcome:
    seconds: float
    first_token_seconds: float | None = None
    tokens: int = 0
    error: str | None = None


@dataclass(frozen=True)
class LevelResult:
    concurrency: int
    requests: int
    completed: int
    errors: int
    tokens_per_second: float
    ttft_p50_ms: float | None
    ttft_p95_ms: float | None
    latency_p50_ms: float | None
    latency_p95_ms: float | None
    wall_seconds: float
    error_messages: list[str] = field(default_factory=list)


async def one_request(client, model: str, messages: list[dict], max_tokens: int) -> Outcome:
    """One streamed greedy completion; the token count is the server's own (usage), else the chunks."""
    started = time.perf_counter()
    first, chunks, usage = None, 0, None
    try:
        stream = await client.chat.completions.create(model=model, messages=messages, max_tokens=max_tokens,
                                                      temperature=0.0, stream=True,
                                                      stream_options={"include_usage": True})
        async for chunk in stream:
            if chunk.usage is not None:
                usage = chunk.usage.completion_tokens
            if chunk.choices and chunk.choices[0].delta.content:
                chunks += 1
                first = first or time.perf_counter() - started
    except Exception as error:  # noqa: BLE001 - every failure is counted and reported, none stops the test
        return Outcome(time.perf_counter() - started, error=f"{type(error).__name__}: {error}")
    return Outcome(time.perf_counter() - started, first, usage if usage is not None else chunks)


async def run_level(client, model: str, chats: list[list[dict]], concurrency: int, requests: int,
                    max_tokens: int, deadline_seconds: float) -> LevelResult:
    gate = asyncio.Semaphore(concurrency)

    async def gated(messages: list[dict]) -> Outcome:
        async with gate:
            return await one_request(client, model, messages, max_tokens)

    started = time.perf_counter()
    tasks = [asyncio.create_task(gated(chats[i % len(chats)])) for i in range(requests)]
    done, pending = await asyncio.wait(tasks, timeout=deadline_seconds)
    for task in pending:
        task.cancel()
    wall = time.perf_counter() - started
    outcomes = [task.result() for task in done]
    good = [o for o in outcomes if o.error is None]
    errors = [o.error for o in outcomes if o.error is not None] + ["not finished by the deadline"] * len(pending)

    def ms(values: list[float], q: float) -> float | None:
        return round(percentile(values, q) * 1000, 1) if values else None

    ttft = [o.first_token_seconds for o in good if o.first_token_seconds is not None]
    latency = [o.seconds for o in good]
    return LevelResult(concurrency, requests, len(good), len(errors),
                       round(sum(o.tokens for o in good) / wall, 2), ms(ttft, 50), ms(ttft, 95), ms(latency, 50),
                       ms(latency, 95), round(wall, 2), sorted(set(errors))[:5])


async def load_test(base_url: str, model: str, chats: list[list[dict]], levels: list[int], requests: int,
                    max_tokens: int, deadline_seconds: float, api_key: str | None = None) -> list[dict]:
    """Every level in turn, after one warm-up request (the engine's first request sets it up). The key
    is the server's (TUNELAB_API_KEY, which the server it starts reads too) unless one is given."""
    from openai import AsyncOpenAI

    api_key = api_key or os.environ.get(API_KEY_VARIABLE) or "tunelab"
    async with AsyncOpenAI(base_url=base_url, api_key=api_key, max_retries=0, timeout=deadline_seconds) as client:
        await one_request(client, model, chats[0], 2)
        return [asdict(await run_level(client, model, chats, level, requests, max_tokens, deadline_seconds))
                for level in levels]


def batching_gain(levels: list[dict]) -> float | None:
    """tokens/s at the highest concurrency over the lowest."""
    low, high = min(levels, key=lambda r: r["concurrency"]), max(levels, key=lambda r: r["concurrency"])
    return round(high["tokens_per_second"] / low["tokens_per_second"], 2) if low["tokens_per_second"] else None


def served_chats(rows: list[dict], prompt: "PromptConfig", labels: list[str], decode_instruction: str | None = None
               ) -> list[list[dict]]:
    """Each test row as the chat a deployed model is sent: the training template's prompt as the
    user turn, its system message, a chat's earlier turns. With ``decode_instruction``, the row's
    own text after that instruction instead (a classifier's template asks for a label, which it
    gives in a token or two; this asks for a paragraph)."""
    from tunelab.prompts.chat import chat_before_answer
    from tunelab.prompts.formatting import template_fields
    from tunelab.prompts.templates import PromptTemplate

    template = PromptTemplate(prompt)
    chats = []
    for row in rows:
        rendered = template.render(template_fields(row, labels), row=f"test {row['id']}")
        if decode_instruction is None:
            chats.append(chat_before_answer(rendered.prompt, prompt.system, history=row.get("history", []),
                                            tool_turns=row.get("tool_turns", [])))
        else:
            chats.append([{"role": "user", "content": decode_instruction + (row["text"] if labels else rendered.prompt)}])
    return chats

PLOTTED = ("workload", "concurrency", "tokens_per_second", "ttft_p50_ms", "latency_p50_ms", "latency_p95_ms", "errors")


def save_load_test_plots(results: dict[str, list[dict]], folder: Path) -> list[Path]:
    """load_test.csv (DVC plots: a header alone when nothing was measured) and, when something was,
    load_test.png: tokens/s and latency p50 by concurrency, one line per workload."""
    import csv

    with (folder / "load_test.csv").open("w", newline="") as table:
        writer = csv.DictWriter(table, fieldnames=PLOTTED, lineterminator="\n")
        writer.writeheader()
        writer.writerows({"workload": workload, **{k: level[k] for k in PLOTTED[1:]}}
                         for workload, levels in results.items() for level in levels)
    if not results:
        return [folder / "load_test.csv"]
    import matplotlib

    matplotlib.use("Agg")  # no display on a server
    import matplotlib.pyplot as plt

    figure, (speed, latency) = plt.subplots(1, 2, figsize=(9, 3.5))
    for workload, levels in results.items():
        levels = sorted(levels, key=lambda level: level["concurrency"])
        concurrency = [level["concurrency"] for level in levels]
        speed.plot(concurrency, [level["tokens_per_second"] for level in levels], "o-", label=workload)
        latency.plot(concurrency, [level["latency_p50_ms"] for level in levels], "o-", label=workload)
    levels = sorted({level["concurrency"] for runs in results.values() for level in runs})
    for axes, label in ((speed, "generated tokens/s"), (latency, "latency p50, ms")):
        axes.set_xscale("log", base=2)
        axes.set_xticks(levels, [str(level) for level in levels])
        axes.set_xlabel("requests in flight")
        axes.set_ylabel(label)
        axes.grid(alpha=0.3)
        axes.legend(fontsize=8)
    figure.suptitle("the served variant under load (openai client, streamed)", fontsize=10)
    figure.tight_layout()
    figure.savefig(folder / "load_test.png", dpi=110)
    plt.close(figure)
    return [folder / "load_test.csv", folder / "load_test.png"]
