"""Training throughput of every strategy on the base model: tokens/s, MFU, peak memory.

    make bench-train                  # all strategies on models/base, 8 sequences × 128 tokens
    python bench/train_throughput.py --strategies lora full --steps 5
    python bench/train_throughput.py --strategies lora full --batching padded loss_only packed --steps 12   # real batches
    python bench/train_throughput.py --batch 32 --length 512 --profile --name train_cuda_32x512   # on a GPU

Each strategy runs in its own process (so its peak memory is its own) and measures the matmul
peak itself, just before its steps, since other load on the machine lowers both. Sequences are
real training tokens packed to exactly 128, so no padding dilutes the figures (``--batching fixed``).
``--batching padded loss_only packed`` measures the train stage's own batches instead: the first
steps' batches of data/formatted/train.jsonl, grouped by length as training groups them, through
its collator: padded with every position projected onto the vocabulary, padded with only the
loss-carrying positions projected (``loss_only``: what the train stage does), or padding-free
(train.padding_free); tokens/s counts real tokens only, so the rows' ratios are what each gains,
measured in one run. MFU counts the model's FLOPs per token (every position projected), so
skipping work shows as a higher MFU, as it does in the train stage. The step is the
model's forward, backward and AdamW step, as in training; the Trainer's own bookkeeping is not
timed; on CUDA it runs under bf16 autocast. Results: bench/results/<name>.json and .md (name:
train_<device> unless --name), and with --profile each strategy's torch.profiler table.
"""

import argparse
import json
import platform
import statistics
import subprocess
import sys
import time
from pathlib import Path

import torch

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "src"))

from tunelab.paths import Paths  # noqa: E402
from tunelab.training.strategies import STRATEGIES  # noqa: E402

PATHS = Paths(REPO)


def packed_batch(batch: int, length: int) -> torch.Tensor:
    """Real tokens from data/formatted/train.jsonl, concatenated and cut into equal rows."""
    tokens = []
    with PATHS.split(PATHS.formatted, "train").open() as rows:
        for line in rows:
            tokens.extend(json.loads(line)["input_ids"])
            if len(tokens) >= batch * length:
                break
    return torch.tensor(tokens[: batch * length]).view(batch, length)


def train_batches(batch: int, count: int, batching: str) -> list[dict]:
    """The first ``count`` batches of the formatted train split as the train stage forms them: grouped by
    length (transformers' LengthGroupedSampler, seeded as train.seed), through its collator (``batching``:
    padded, loss_only or packed)."""
    from transformers import AutoTokenizer
    from transformers.trainer_pt_utils import LengthGroupedSampler

    from tunelab.io.jsonl import read_jsonl
    from tunelab.training.run import collator, token_dataset

    rows = read_jsonl(PATHS.split(PATHS.formatted, "train"))
    dataset = token_dataset(rows, "train")
    sampler = LengthGroupedSampler(batch, lengths=[len(row["input_ids"]) for row in rows],
                                   generator=torch.Generator().manual_seed(42))
    collate = collator(AutoTokenizer.from_pretrained(PATHS.base_model), packed=batching == "packed",
                       loss_logits_only=batching == "loss_only")
    order = list(sampler)
    return [collate([dataset[i] for i in order[k * batch:(k + 1) * batch]]) for k in range(count)]


def real_tokens(inputs: dict) -> int:
    mask = inputs.get("attention_mask")
    return int(mask.sum()) if mask is not None else inputs["input_ids"].numel()


def profiled(step, device: str, steps: int = 3) -> str:
    """torch.profiler's table of the ops and kernels that take the time of ``steps`` more steps."""
    from torch.profiler import ProfilerActivity, profile

    activities = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if device == "cuda" else [])
    with profile(activities=activities) as trace:
        for _ in range(steps):
            step()
        if device == "cuda":
            torch.cuda.synchronize()
    sort = "self_cuda_time_total" if device == "cuda" else "self_cpu_time_total"
    return trace.key_averages().table(sort_by=sort, row_limit=20, max_name_column_width=60)


def measure(strategy_name: str, steps: int, batch: int, length: int, profile: Path | None = None,
            batching: str = "fixed") -> dict:
    from tunelab.benchmarking.memory import peak_memory_mb
    from tunelab.config.compose import compose_conf
    from tunelab.config.load import to_section
    from tunelab.config.schema import StrategyConfig
    from tunelab.training.run import loss_at_kept_positions
    from tunelab.training.strategies import trainable_model
    from tunelab.training.throughput import flops_per_token, measure_matmul_peak, total_parameters, trainable_parameters

    strategy = to_section(StrategyConfig, "strategy",
                          compose_conf(REPO / "conf", [f"strategy={strategy_name}"])["strategy"])
    device = "cuda" if torch.cuda.is_available() else "cpu"
    model = trainable_model(PATHS.base_model, strategy, gradient_checkpointing=False)
    model.to(device).train()
    optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-5)
    if batching == "fixed":
        fixed = packed_batch(batch, length)
        batches = [{"input_ids": fixed, "labels": fixed}] * (steps + 1)
    else:
        batches = train_batches(batch, steps + 1, batching)
    batches = [{k: v.to(device) if isinstance(v, torch.Tensor) else v for k, v in b.items()} for b in batches]
    autocast = torch.autocast("cuda", dtype=torch.bfloat16) if device == "cuda" else torch.autocast("cpu", enabled=False)
    peak_flops = measure_matmul_peak()

    def step(inputs: dict) -> None:
        with autocast:
            if "logits_to_keep" in inputs:  # the Trainer's compute_loss_func on the kept logits
                loss = loss_at_kept_positions(model(**{k: v for k, v in inputs.items() if k != "labels"}), inputs["labels"])
            else:
                loss = model(**inputs).loss
        loss.backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)

    times, tokens = [], 0
    for index, inputs in enumerate(batches):  # the first step warms up allocators and kernels
        if device == "cuda":
            torch.cuda.synchronize()
        start = time.perf_counter()
        step(inputs)
        if device == "cuda":
            torch.cuda.synchronize()
        if index:
            times.append(time.perf_counter() - start)
            tokens += real_tokens(inputs)
    if profile is not None:
        profile.write_text(profiled(lambda: step(batches[-1]), device))
    step_seconds = statistics.median(times)
    tokens_per_second = tokens / sum(times)
    return {
        "strategy": strategy_name,
        "batching": batching,
        "trainable_parameters": trainable_parameters(model),
        "total_parameters": total_parameters(model),
        "step_seconds": round(step_seconds, 3),
        "tokens_per_second": round(tokens_per_second, 1),
        "flops_per_token": flops_per_token(model),
        "matmul_peak_gflops": round(peak_flops / 1e9, 1),
        "mfu": round(tokens_per_second * flops_per_token(model) / peak_flops, 3),
        "peak_memory_mb": round(peak_memory_mb(), 1),
    }


def environment() -> dict:
    from importlib.metadata import PackageNotFoundError, version

    def installed(name: str) -> str | None:
        try:
            return version(name)
        except PackageNotFoundError:  # e.g. no bitsandbytes on a GPU machine: qlora is then not measured
            return None

    cpuinfo = Path("/proc/cpuinfo").read_text().splitlines() if Path("/proc/cpuinfo").exists() else []
    cpu = next((line.split(":", 1)[1].strip() for line in cpuinfo if line.startswith("model name")), platform.processor())
    return {"cpu": cpu, "threads": torch.get_num_threads(), "torch": torch.__version__,
            **{name: installed(name) for name in ("transformers", "peft", "bitsandbytes", "torchao")},
            "gpu": torch.cuda.get_device_name() if torch.cuda.is_available() else None}


def markdown(results: list[dict], env: dict, batch: int, length: int) -> str:
    lines = [f"Training step, {batch}×{length} tokens, on {env['gpu'] or env['cpu']} ({env['threads']} threads), "
             f"torch {env['torch']}.", "",
             "| strategy | batching | trainable | step (s) | tokens/s | GFLOP/token | matmul peak (GFLOP/s) | MFU | "
             "peak memory (MiB) |", "|---|---|---|---|---|---|---|---|---|"]
    for r in results:
        lines.append(f"| {r['strategy']} | {r['batching']} | {r['trainable_parameters']:,} | {r['step_seconds']} "
                     f"| {r['tokens_per_second']} | {r['flops_per_token'] / 1e9:.2f} | {r['matmul_peak_gflops']} "
                     f"| {r['mfu']:.0%} | {r['peak_memory_mb']:,.0f} |")
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--strategies", nargs="+", default=STRATEGIES.names(), choices=STRATEGIES.names())
    parser.add_argument("--steps", type=int, default=3)
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--length", type=int, default=128)
    parser.add_argument("--batching", nargs="+", default=["fixed"], choices=["fixed", "padded", "loss_only", "packed"],
                        help="fixed: rows of exactly --length tokens; the others: the train stage's own batches")
    parser.add_argument("--profile", action="store_true", help="also write each strategy's torch.profiler table")
    parser.add_argument("--name", help="results file name (default: train_<device>)")
    parser.add_argument("--one", choices=STRATEGIES.names(), help=argparse.SUPPRESS)  # the per-strategy child process
    parser.add_argument("--profile-to", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.one:
        print(json.dumps(measure(args.one, args.steps, args.batch, args.length, args.profile_to, args.batching[0])))
        return
    if not (PATHS.base_model / "config.json").is_file():
        sys.exit("bench: models/base is missing; run `make run` first")
    device = "cuda" if torch.cuda.is_available() else "cpu"
    out = REPO / "bench/results" / (args.name or f"train_{device}")
    results = []
    for name in args.strategies:
        for batching in args.batching:
            profile = ["--profile-to", f"{out}_{name}_{batching}_profile.txt"] if args.profile else []
            child = subprocess.run([sys.executable, __file__, "--one", name, "--steps", str(args.steps), "--batch",
                                    str(args.batch), "--length", str(args.length), "--batching", batching, *profile],
                                   capture_output=True, text=True)
            if child.returncode != 0:
                print(f"{name} ({batching}): failed\n{child.stderr[-2000:]}", file=sys.stderr)
                continue
            results.append(json.loads(child.stdout.strip().splitlines()[-1]))
            print(json.dumps(results[-1]), flush=True)
    env = environment()
    summary = {"environment": env, "results": results}
    out.with_suffix(".json").write_text(json.dumps(summary, indent=2) + "\n")
    table = markdown(results, env, args.batch, args.length)
    out.with_suffix(".md").write_text(table)
    print(table)


if __name__ == "__main__":
    main()
