"""Few-shot evaluation throughput with and without the shared demonstration-prefix cache.

    make bench-eval                                  # default model, 4 shots, 64 test rows
    python bench/eval_prefix_cache.py --shots 8 --rows 64 --one-pass

Ways to score the same few-shot prompts by answer-choice likelihood, on models/base:

- row_once: each row runs once and scores every choice from its last logit, no prefix cache;
- prefix_cache: row_once, with the demonstrations run once and their cache reused (the
  evaluate stage's path);
- one_pass (with --one-pass; slow): the plain computation, one sequence per (row, choice),
  every position projected onto the vocabulary.

Each is timed after a warm-up run, repeated, the median kept; the scores are checked to agree.
Results: bench/results/eval_prefix_<device>.json and .md.
"""

import argparse
import json
import platform
import statistics
import sys
import time
from pathlib import Path

import torch

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "src"))

from tunelab.config.compose import compose_conf  # noqa: E402
from tunelab.config.load import to_section  # noqa: E402
from tunelab.config.schema import DataConfig, PromptConfig  # noqa: E402
from tunelab.evaluation.batching import batches  # noqa: E402
from tunelab.evaluation.evaluator import choice_token_ids  # noqa: E402
from tunelab.evaluation.prompting import build_prompts, pick_demonstrations  # noqa: E402
from tunelab.evaluation.scoring import SharedPrefix, choice_logprobs, choice_logprobs_one_pass, common_prefix_length  # noqa: E402
from tunelab.io.jsonl import read_jsonl  # noqa: E402
from tunelab.models.loading import load_base  # noqa: E402
from tunelab.paths import Paths  # noqa: E402
from tunelab.prompts.formatting import load_tokenizer  # noqa: E402

PATHS = Paths(REPO)


def few_shot_rows(shots: int, count: int, tokenizer):
    params = compose_conf(REPO / "conf")
    prompt = to_section(PromptConfig, "prompt", params["prompt"])
    labels = to_section(DataConfig, "data", params["data"]).labels
    train = read_jsonl(PATHS.split(PATHS.prepared, "train"))
    test = read_jsonl(PATHS.split(PATHS.prepared, "test"))[:count]
    prompts = build_prompts(test, prompt, labels, tokenizer, pick_demonstrations(train, labels, shots, seed=0))
    rows = [tokenizer(p.text, add_special_tokens=False)["input_ids"] for p in prompts]
    return rows, choice_token_ids(prompts, tokenizer, use_chat_template=True)


def timed(score, repeats: int) -> tuple[float, torch.Tensor]:
    score()  # warm-up: allocator, thread pool
    times = []
    for _ in range(repeats):
        started = time.perf_counter()
        result = score()
        times.append(time.perf_counter() - started)
    return statistics.median(times), result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--shots", type=int, default=4)
    parser.add_argument("--rows", type=int, default=64)
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--one-pass", action="store_true", help="also time the plain one-pass computation")
    args = parser.parse_args()
    tokenizer = load_tokenizer(PATHS.base_model)
    model = load_base(PATHS.base_model).eval()
    device = "cuda" if torch.cuda.is_available() else "cpu"
    model.to(device)
    rows, choices = few_shot_rows(args.shots, args.rows, tokenizer)
    pad = tokenizer.pad_token_id
    prefix_length = common_prefix_length(rows)

    def one_pass():
        return torch.cat([choice_logprobs_one_pass(model, b, choices, pad) for b in batches(rows, args.batch_size)])

    def row_once():
        return torch.cat([choice_logprobs(model, b, choices, pad) for b in batches(rows, args.batch_size)])

    def prefix_cache():  # the prefix's own forward pass is inside the timing
        prefix = SharedPrefix(model, rows[0][:prefix_length])
        tails = [row[prefix_length:] for row in rows]
        return torch.cat([choice_logprobs(model, b, choices, pad, prefix) for b in batches(tails, args.batch_size)])

    results, reference = {}, None
    methods = [("row_once", row_once), ("prefix_cache", prefix_cache)] + ([("one_pass", one_pass)] if args.one_pass else [])
    for name, score in methods:
        seconds, scores = timed(score, args.repeats)
        reference = scores if reference is None else reference
        results[name] = {"seconds": round(seconds, 3), "examples_per_second": round(len(rows) / seconds, 2),
                         "max_abs_difference": float((scores - reference).abs().max())}
        print(f"{name:>13}: {results[name]['examples_per_second']:8.2f} examples/s "
              f"(max |Δ log p| vs row_once {results[name]['max_abs_difference']:.1e})")
    speedup = results["prefix_cache"]["examples_per_second"] / results["row_once"]["examples_per_second"]
    print(f"prefix cache vs no cache: {speedup:.2f}x (goal >= 3x)")
    write_results(args, device, rows, prefix_length, results, speedup)


def write_results(args, device: str, rows: list[list[int]], prefix_length: int, results: dict, speedup: float) -> None:
    lengths = sorted(len(row) for row in rows)
    fingerprint = {"device": torch.cuda.get_device_name() if device == "cuda" else platform.processor() or platform.machine(),
                   "threads": torch.get_num_threads(), "torch": torch.__version__}
    record = {"shots": args.shots, "rows": len(rows), "batch_size": args.batch_size, "repeats": args.repeats,
              "prefix_tokens": prefix_length, "prompt_tokens_median": lengths[len(lengths) // 2],
              "results": results, "prefix_cache_speedup": round(speedup, 2), "environment": fingerprint}
    out = REPO / "bench/results"
    out.mkdir(exist_ok=True)
    (out / f"eval_prefix_{device}.json").write_text(json.dumps(record, indent=2) + "\n")
    lines = [f"# Few-shot choice scoring, {args.shots} shots, {len(rows)} rows ({device})\n",
             f"Shared prefix {prefix_length} tokens of a median {record['prompt_tokens_median']}-token prompt; "
             f"batch {args.batch_size}; median of {args.repeats}.\n",
             "| method | examples/s | max abs diff vs row_once |", "|---|---|---|"]
    lines += [f"| {name} | {r['examples_per_second']} | {r['max_abs_difference']:.1e} |" for name, r in results.items()]
    lines.append(f"\nPrefix cache vs no cache: **{speedup:.2f}x** (goal ≥ 3x).\n")
    (out / f"eval_prefix_{device}.md").write_text("\n".join(lines))


if __name__ == "__main__":
    main()
