"""The comparison people read: one row per model variant × prompting method × scoring.

Each row carries its task's metrics by their own names (accuracy and macro_f1; exact_match and
f1; rougeL, ...) with their intervals, ``metric`` naming the headline one (the task's: the
evaluate stage writes the list in each metrics file), and the headline again as ``score``
with its interval, which the tables, plots and sweeps compare whatever the task.
"""

from pathlib import Path

from tunelab.io.jsonl import parse_json_row
from tunelab.paths import ALIGNED, BASE, TRAINED, is_quantized
from tunelab.records import (
    AlignRecord,
    BaseRecord,
    BenchRecord,
    PromptSearchRecord,
    QuantizeRecord,
    ServeRecord,
    TrainRecord,
)
from tunelab.reporting.markdown import pipe_table
from tunelab.reporting.significance import BEST, RECOMMENDABLE

SCORE = ("score", "score_ci_low", "score_ci_high")


def with_score(row: dict) -> dict:
    """The row with its headline metric (``row["metric"]``) as ``score`` and its interval."""
    metric = row["metric"]
    return {**row, "score": row[metric], "score_ci_low": row.get(f"{metric}_ci_low"),
            "score_ci_high": row.get(f"{metric}_ci_high")}


def named_figures(report: dict, metrics: list[str]) -> dict:
    """Each of ``metrics`` in ``report``, rounded, with its interval where it has one."""
    figures = {}
    for name in metrics:
        if name in report:
            figures[name] = round(report[name], 4)
        if f"{name}_ci95" in report:
            low, high = report[f"{name}_ci95"]
            figures |= {f"{name}_ci_low": round(low, 4), f"{name}_ci_high": round(high, 4)}
    return figures


def table_metrics(files: list[Path]) -> list[str]:
    """The metrics the tables show (the headline first), as the evaluate stage named them."""
    for path in files:
        summary = parse_json_row(path.read_text(), str(path), required=("variant",))
        if summary.get("metrics"):
            return summary["metrics"]
    return ["accuracy"]


def eval_rows(files: list[Path]) -> list[dict]:
    """Flatten metrics/eval/<variant>.json files into table rows, in file then prompting order;
    each extra test set's headline beside the test split's, as ``<set>.<metric>``."""
    rows = []
    for path in files:
        summary = parse_json_row(path.read_text(), str(path), required=("variant", "prompting"))
        metric = summary.get("metrics", [None])[0]
        for prompting, result in summary["prompting"].items():
            for scoring, report in result["scoring"].items():
                rows.append(with_score({
                    "variant": summary["variant"], "prompting": prompting, "template": result.get("template"),
                    "scoring": scoring, "metric": metric, **named_figures(report, summary["metrics"]),
                    "ci_method": report.get(f"{metric}_ci_method"),
                    "unparseable_share": report.get("unparseable_share"), "examples": report["examples"],
                    "examples_per_second": report["examples_per_second"],
                    **extra_set_figures(summary.get("extra_test_sets", {}), prompting, scoring, metric),
                }))
    return rows


def extra_set_figures(extra_sets: dict, prompting: str, scoring: str, metric: str) -> dict:
    """One row's headline on each extra test set (eval.extra_test_sets), keys prefixed by the set."""
    figures = {}
    for test_set, methods in extra_sets.items():
        report = methods.get(prompting, {}).get("scoring", {}).get(scoring)
        if report is not None:
            figures |= {f"{test_set}.{key}": value for key, value in named_figures(report, [metric]).items()}
    return figures


def extra_set_cell(row: dict, test_set: str) -> str:
    key = f"{test_set}.{row['metric']}"
    return with_interval(row.get(key), row.get(f"{key}_ci_low"), row.get(f"{key}_ci_high"))


LABELS = ("variant", "prompting", "template", "scoring", "adaptation", "quantization", "ci_method", "frontier", *SCORE)


def row_key(row: dict) -> str:
    return f"{row['variant']}/{row['prompting']}/{row['scoring']}"


def metrics_by_key(rows: list[dict]) -> dict:
    """metrics/eval.json: ``{"base/zero_shot/choice": {...}}``, what dvc metrics show/diff compare."""
    return {row_key(r): {k: v for k, v in r.items() if k not in LABELS and v is not None} for r in rows}


def rows_of(by_key: dict) -> list[dict]:
    """metrics/eval.json back into rows (``metrics_by_key``'s inverse, less the labels it drops)."""
    return [with_score({**dict(zip(("variant", "prompting", "scoring"), key.split("/"))), **figures})
            for key, figures in by_key.items()]


def pipeline_summary(by_key: dict, headline: tuple[str, str]) -> dict[str, float]:
    """The figures a pipeline's MLflow run carries, from metrics/eval.json: every row's headline
    metric, and the trained model's headline result (eval.headline) and train time under the
    metric's own name (``accuracy``, ``exact_match``, ``rougeL``) and ``train_seconds``: what a
    sweep's runs table compares."""
    summary = {f"{key.replace('/', '.')}.{figures['metric']}": figures[figures["metric"]]
               for key, figures in by_key.items()}
    trained = by_key.get("/".join(("trained", *headline)), {})
    if trained:
        summary[trained["metric"]] = trained[trained["metric"]]
        if trained.get("train_seconds") is not None:
            summary["train_seconds"] = trained["train_seconds"]
    return summary


def with_costs(rows: list[dict], base: BaseRecord | None, train: TrainRecord | None, quantize: QuantizeRecord | None,
               bench: BenchRecord | None, align: AlignRecord | None = None) -> list[dict]:
    """Each row with what its variant cost: adaptation, quantization, train time, speed, size.

    The one place accuracy meets cost. Train time is what it took to make the variant from the
    base model: nothing for prompting, training for the trained model, training plus
    quantization for a deployable variant, training plus alignment for the aligned model and the
    variants made from it (quantize.source). Speed and latency are the benchmark's (batch 1); the
    base model is not benchmarked. A record is None where its stage did not run.
    """
    made = quantize.variants if quantize else {}
    from_aligned = quantize is not None and quantize.source == ALIGNED
    measured = bench.variants if bench else {}
    costed = []
    for row in rows:
        variant = row["variant"]
        speed = measured.get(variant, {})
        seconds = 0.0 if variant == BASE else (train.train_seconds if train else None)
        if variant in made and seconds is not None:
            seconds = round(seconds + (made[variant].seconds or 0.0), 1)
        adaptation = "none (prompting)" if variant == BASE else (train.strategy if train else "?")
        if (variant == ALIGNED or (variant in made and from_aligned)) and align is not None:
            known = seconds is not None and align.train_seconds is not None
            seconds = round(seconds + align.train_seconds, 1) if known else None
            adaptation += f" + {align.method}"
        size = speed.get("size_mb", made[variant].size_mb if variant in made else None)
        costed.append({
            **row,
            "adaptation": adaptation,
            "quantization": variant if is_quantized(variant) else "none",
            "train_seconds": seconds,
            "tokens_per_second": speed.get("tokens_per_second", {}).get("1"),
            "token_latency_p50_ms": speed.get("token_latency_ms", {}).get("p50"),
            "size_mb": (base.saved_megabytes if base else None) if variant == BASE else size,
        })
    return costed


def cell(value, form: str = "{}") -> str:
    """A table cell: the value formatted, or — where there is none."""
    return "—" if value is None else form.format(value)


def with_interval(value: float | None, low: float | None, high: float | None) -> str:
    """0.892 [0.862, 0.916], or the value alone where it has no interval."""
    if value is None:
        return "—"
    return f"{value:.3f}" if low is None else f"{value:.3f} [{low:.3f}, {high:.3f}]"


def score_cell(row: dict) -> str:
    return with_interval(row["score"], row["score_ci_low"], row["score_ci_high"])


def headline_metric(rows: list[dict]) -> str:
    """The rows' headline metric; ``score`` where rows of different tasks are compared (a sweep over data)."""
    metrics = {r["metric"] for r in rows}
    return metrics.pop() if len(metrics) == 1 else "score"


def with_comparisons(rows: list[dict], compared: dict, key=row_key) -> list[dict]:
    """Each row with its paired comparison against the best row (reporting.significance):
    ``vs_best`` (best, non-inferior, inconclusive, worse), the difference ``diff_vs_best`` and its
    interval (``diff_vs_best_ci_low``/``_high``, each end a one-sided corrected bound)."""
    marked = []
    for r in rows:
        c = compared.get(key(r))
        verdict = c.verdict if c else (BEST if compared else None)
        figures = {"diff_vs_best": round(c.difference, 4), "diff_vs_best_ci_low": round(c.low, 4),
                   "diff_vs_best_ci_high": round(c.high, 4)} if c else {}
        earlier = {k: v for k, v in r.items() if not k.startswith("diff_vs_best")}  # a run's own report's, in a sweep
        marked.append({**earlier, "vs_best": verdict, **figures})
    return marked


def versus_cell(row: dict) -> str:
    """non-inferior (−0.000 [−0.011, 0.011]): the verdict and the paired difference it rests on."""
    if row.get("diff_vs_best") is None:
        return cell(row.get("vs_best"))
    return (f"{row['vs_best']} ({row['diff_vs_best']:+.3f} "
            f"[{row['diff_vs_best_ci_low']:+.3f}, {row['diff_vs_best_ci_high']:+.3f}])")


def variants_table(rows: list[dict], extra_sets: list[str] = ()) -> str:
    """The comparison in one table: every variant × prompting method × scoring, with its costs and
    its paired comparison with the best row; then its headline on each extra test set."""
    metric = headline_metric(rows)
    headers = ["variant", "adaptation", "prompting (template)", "quantization", "scoring", f"{metric} [95% CI]",
               "vs best: Δ [interval]", "train s", "tokens/s", "latency p50 ms", "size MB",
               *(f"{name}: {metric} [95% CI]" for name in extra_sets)]
    return pipe_table(headers, ([r["variant"], r["adaptation"],
                                 f"{r['prompting']} ({r['template']})" if r.get("template") else r["prompting"],
                                 r["quantization"], r["scoring"], score_cell(r), versus_cell(r),
                                 cell(r["train_seconds"], "{:.0f}"), cell(r["tokens_per_second"]),
                                 cell(r["token_latency_p50_ms"]), cell(r["size_mb"]),
                                 *(extra_set_cell(r, name) for name in extra_sets)] for r in rows))


def comparisons_table(rows: list[dict], compared: dict) -> str:
    """How each row compares with the best, on the test rows both were scored on."""
    if not compared:
        return ""
    first = next(iter(compared.values()))
    metric = headline_metric(rows)
    table = pipe_table(["row", "rows", f"Δ {metric}", "interval", "test", "verdict"],
                       ([key, c.rows, f"{c.difference:+.3f}", f"[{c.low:+.3f}, {c.high:+.3f}]", c.test, c.verdict]
                        for key, c in compared.items()))
    return (f"Each row against the best, `{first.best}`, on the test rows both were scored on. Each end of an "
            f"interval is a one-sided bound at {first.level:.2%} ({len(compared)} rows compared, Bonferroni), so "
            f"all the table's claims hold together at {1 - first.level * len(compared):.0%} "
            f"(eval.recommend.level). **non-inferior**: the lower end is above "
            f"−{first.margin:g} (eval.recommend.margin); **worse**: the upper end is below 0; **inconclusive**: "
            f"neither, never recommended.\n\n" + table)


def search_table(search: PromptSearchRecord) -> str:
    """The prompt search's candidates on val, best first (ties as the search broke them), the winner marked."""
    ranked = sorted(enumerate(search.candidates), key=lambda item: (-item[1]["score"], item[1]["shots"], item[0]))
    table = pipe_table(["candidate (template, demonstrations, calibration)", f"val {search.metric} [95% CI]"],
                       ([c["name"] + (" (winner)" if c["name"] == search.winner["name"] else ""),
                         with_interval(c["score"], *c["ci95"])] for _, c in ranked))
    return (f"Every candidate of eval.prompt_search, scored on the first {search.rows} val rows (never test); the "
            f"winner is the `optimized` row above, scored once on test.\n\n" + table)



def serve_table(serve: ServeRecord, bench: BenchRecord | None) -> str:
    """The load test's levels per workload, beside the in-process benchmark's tokens/s of the same
    variant at the same batch size (bench: EOS ignored, prompts batched at once)."""
    in_process = (bench.variants.get(serve.variant) or {}).get("tokens_per_second", {}) if bench else {}
    table = pipe_table(["workload", "in flight", "tokens/s", "in-process tokens/s (batch)", "TTFT p50 / p95, ms",
                        "latency p50 / p95, ms", "completed", "errors"],
                       ([workload, level["concurrency"], f"{level['tokens_per_second']:.1f}",
                         cell(in_process.get(str(level["concurrency"])), "{:.1f}"),
                         f"{cell(level['ttft_p50_ms'])} / {cell(level['ttft_p95_ms'])}",
                         f"{cell(level['latency_p50_ms'])} / {cell(level['latency_p95_ms'])}",
                         f"{level['completed']}/{level['requests']}", level["errors"]]
                        for workload, levels in serve.workloads.items() for level in levels))
    gains = ", ".join(f"{workload} {cell(gain, '{:.2f}')}×" for workload, gain in serve.batching_gain.items())
    return (f"`{serve.variant}` on {serve.engine}, streamed chat completions through the openai client on loopback, "
            f"{serve.settings['load_test']['max_tokens']} tokens at most each. Batching gain (tokens/s at the most "
            f"requests in flight over one): {gains}.\n\n" + table)


def markdown_table(rows: list[dict], metrics: list[str]) -> str:
    """Every scored row with each of the task's ``metrics`` (the headline first, with intervals)."""
    headers = ["variant", "prompting", "scoring", *(f"{name} [95% CI]" if i == 0 else name for i, name in enumerate(metrics)),
               "unparseable", "examples", "examples/s"]
    return pipe_table(headers, ([r["variant"], r["prompting"], r["scoring"],
                                 *(with_interval(r.get(name), r.get(f"{name}_ci_low"), r.get(f"{name}_ci_high"))
                                   for name in metrics),
                                 "" if r["unparseable_share"] is None else f"{r['unparseable_share']:.1%}",
                                 r["examples"], f"{r['examples_per_second']:.1f}"] for r in rows))


def skipped_lines(files: list[Path]) -> list[str]:
    """Variants that were not made or scored here, with the reason."""
    lines = []
    for path in files:
        summary = parse_json_row(path.read_text(), str(path), required=("variant",))
        if summary.get("skipped"):
            lines.append(f"- `{summary['variant']}`: skipped — {summary['skipped']}")
    return lines


def headline_rows(rows: list[dict], headline: tuple[str, str]) -> dict[str, dict]:
    """Each variant's headline row (eval.headline: prompting method and scoring), by variant."""
    return {r["variant"]: r for r in rows if (r["prompting"], r["scoring"]) == headline}


def tradeoff_rows(rows: list[dict], headline: tuple[str, str]) -> list[dict]:
    """metrics/report/tradeoffs.csv (DVC plots): each benchmarked variant's headline score and costs."""
    return [{"variant": name, "metric": r["metric"], "score": r["score"], "token_latency_p50_ms": r["token_latency_p50_ms"],
             "tokens_per_second_batch1": r["tokens_per_second"], "size_mb": r["size_mb"]}
            for name, r in headline_rows(rows, headline).items() if r["token_latency_p50_ms"] is not None]


def deployment_table(measured: dict[str, dict], rows: list[dict], headline: tuple[str, str], reference: str = TRAINED) -> str:
    """Cost of each benchmarked variant (metrics/bench.json's ``variants``) beside its headline
    score and the change against ``reference``; a GGUF measured natively gets a row of its own
    (its score is the file's, read through transformers, so it is not repeated there)."""
    scores = headline_rows(rows, headline)
    reference_score = scores.get(reference, {}).get("score")
    metric = headline_metric(rows)
    sizes = sorted({size for v in measured.values() for size in v["tokens_per_second"]}, key=int)
    headers = ["variant", "size MB", "load s", "TTFT ms", "token p50 / p95 ms", *(f"tokens/s @{size}" for size in sizes),
               "peak RSS MB", f"{metric} [95% CI]", f"Δ {metric}"]
    lines = []
    for name, v in measured.items():
        scored = scores.get(name)
        score = score_cell(scored) if scored else ""
        delta = f"{scored['score'] - reference_score:+.3f}" if scored and reference_score is not None else ""
        lines.append(cost_row(name, v, sizes, [v.get("peak_rss_mb", ""), score, delta]))
        if "load_seconds" in (native := v.get("llama_cpp", {})):
            lines.append(cost_row(f"{name} on llama.cpp", {"size_mb": v["size_mb"], **native}, sizes, ["", "", ""]))
    return pipe_table(headers, lines)


def cost_row(name: str, v: dict, sizes: list[str], rest: list) -> list:
    return [name, v["size_mb"], v["load_seconds"], v["ttft_ms"],
            f"{v['token_latency_ms']['p50']} / {v['token_latency_ms']['p95']}",
            *(v["tokens_per_second"].get(size, "") for size in sizes), *rest]


def native_skipped_lines(measured: dict[str, dict]) -> list[str]:
    """A line per GGUF variant that llama.cpp could not measure here, with how to make it."""
    return [f"- {name} on llama.cpp: not measured: {v['llama_cpp']['skipped']}"
            for name, v in measured.items() if "skipped" in v.get("llama_cpp", {})]


COSTS = ("token_latency_p50_ms", "size_mb", "train_seconds")
"""What a variant costs, each the lower the better: to serve (latency, memory) and to make."""


def with_frontier(rows: list[dict]) -> list[dict]:
    """Each row marked ``frontier`` where it is on the Pareto frontier (the plots mark it too)."""
    frontier = pareto_frontier(rows)
    return [{**r, "frontier": row_key(r) in frontier} for r in rows]


def frontier_line(rows: list[dict]) -> str:
    names = [f"`{row_key(r)}` ({score_cell(r)}, {r['token_latency_p50_ms']} ms/token, {r['size_mb']} MB)"
             for r in rows if r.get("frontier")]
    return (f"Pareto frontier of {headline_metric(rows)} against per-token latency, size and train time: "
            + "; ".join(names) + ".\n") if names else ""


def pareto_frontier(rows: list[dict]) -> set[str]:
    """The rows no other row beats on the headline score and every cost at once (rows with all
    costs known: the benchmarked variants). Train times within 5% count as the same: a merge or a
    quantization adds seconds to training's minutes, and a deployable variant should not lose
    its place to the adapter it was made from over them."""
    costed = [r for r in rows if all(r.get(cost) is not None for cost in COSTS)]

    def cost(row: dict, name: str, other: dict) -> float:
        same = name == "train_seconds" and abs(row[name] - other[name]) <= 0.05 * max(row[name], other[name])
        return other[name] if same else row[name]

    def dominates(a: dict, b: dict) -> bool:
        costs = [(cost(a, c, b), b[c]) for c in COSTS]
        at_least = a["score"] >= b["score"] and all(mine <= theirs for mine, theirs in costs)
        return at_least and (a["score"] > b["score"] or any(mine < theirs for mine, theirs in costs))

    return {row_key(r) for r in costed if not any(dominates(other, r) for other in costed)}


def recommended(rows: list[dict]) -> dict | None:
    """The row to deploy: the cheapest row that is the best or non-inferior to it within the margin
    (reporting.significance), among those scored on all the test rows the best was scored on.
    Prompting needs no training, so a prompting row that qualifies wins; else the fastest
    benchmarked variant, then the smallest. The report, the sweep report and the MLflow pipeline
    run all ask this one function."""
    best = next((r for r in rows if r.get("vs_best") == BEST), None)
    # only rows scored on every test row the best was (a method with a row limit is a sample, not a verdict)
    fit = [r for r in rows if r.get("vs_best") in RECOMMENDABLE
           and r.get("examples", 0) >= best.get("examples", 0)] if best else []
    if not fit:
        return None
    prompting = sorted((r for r in fit if r.get("train_seconds") == 0), key=lambda r: -r["score"])
    return (prompting or cheapest_first(fit) or fit)[0]


def recommendation_tags(rows: list[dict], margin: float) -> dict[str, str]:
    """The recommendation on a pipeline's MLflow run, where the runs table of a sweep shows it."""
    pick = recommended(rows)
    return {"tunelab.recommended": row_key(pick), "tunelab.recommend_rule":
            f"cheapest row best or non-inferior to the best within {margin:g} (eval.recommend)"} if pick else {}


def cheapest_first(rows: list[dict]) -> list[dict]:
    """The benchmarked rows, fastest then smallest first."""
    return sorted((r for r in rows if r.get("token_latency_p50_ms") is not None),
                  key=lambda r: (r["token_latency_p50_ms"], r["size_mb"]))


def cheaper_than(rows: list[dict], pick: dict) -> list[dict]:
    """The rows the rule would have preferred to ``pick`` had they qualified: prompting rows (no
    training) when ``pick`` was trained, and benchmarked rows faster (or as fast and smaller)."""
    if pick.get("train_seconds") == 0:
        return []
    prompting = [r for r in rows if r.get("train_seconds") == 0]
    if pick.get("token_latency_p50_ms") is None:
        return prompting
    cost = (pick["token_latency_p50_ms"], pick["size_mb"])
    return prompting + [r for r in cheapest_first(rows) if (r["token_latency_p50_ms"], r["size_mb"]) < cost]


def recommendation(rows: list[dict], margin: float) -> str:
    """One sentence a person can act on (``recommended``), and why each cheaper row was not chosen."""
    pick = recommended(rows)
    if pick is None:
        return ""
    best = next(r for r in rows if r.get("vs_best") == BEST)
    why = "the best" if pick is best else (
        f"non-inferior to the best (`{row_key(best)}`, {score_cell(best)}) within a margin of {margin:g}: "
        f"Δ {pick['diff_vs_best']:+.3f}, lower bound {pick['diff_vs_best_ci_low']:+.3f} > −{margin:g}")
    costs = [f"{pick['token_latency_p50_ms']} ms per token" if pick.get("token_latency_p50_ms") is not None else None,
             f"{pick['size_mb']} MB" if pick.get("size_mb") is not None else None,
             "no training" if pick.get("train_seconds") == 0 else f"{cell(pick.get('train_seconds'), '{:.0f}')} s to make"]
    text = (f"**Recommendation: `{row_key(pick)}`**: {pick['metric']} {score_cell(pick)}, {why}; "
            + ", ".join(c for c in costs if c) + ".\n")
    cheaper = [f"`{row_key(r)}` {versus_cell(r)}" for r in cheaper_than(rows, pick) if r is not pick]
    return text + (f"Cheaper, not recommended: {'; '.join(cheaper)}.\n" if cheaper else "")
