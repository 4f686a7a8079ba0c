"""The comparison people read: one row per model variant × prompt strategy × scoring."""

from pathlib import Path

from tunelab.io.jsonl import parse_json_row


def eval_rows(files: list[Path]) -> list[dict]:
    """Flatten metrics/eval/<variant>.json files into table rows, in file then strategy order."""
    rows = []
    for path in files:
        summary = parse_json_row(path.read_text(), str(path), required=("variant", "strategies"))
        for strategy, result in summary["strategies"].items():
            for scoring, report in result["scoring"].items():
                low, high = report["accuracy_ci95"]
                rows.append({
                    "variant": summary["variant"], "strategy": strategy, "scoring": scoring,
                    "accuracy": round(report["accuracy"], 4), "accuracy_ci_low": round(low, 4),
                    "accuracy_ci_high": round(high, 4), "macro_f1": round(report["macro_f1"], 4),
                    "unparseable_share": report.get("unparseable_share"), "examples": report["examples"],
                    "examples_per_second": report["examples_per_second"],
                })
    return rows


def metrics_by_key(rows: list[dict]) -> dict:
    """metrics/eval.json: ``{"base/zero_shot/choice": {...}}``, what dvc metrics show/diff compare."""
    return {f"{r['variant']}/{r['strategy']}/{r['scoring']}": {k: v for k, v in r.items()
                                                              if k not in ("variant", "strategy", "scoring") and v is not None}
            for r in rows}


def markdown_table(rows: list[dict]) -> str:
    header = ("| variant | strategy | scoring | accuracy [95% CI] | macro-F1 | unparseable | examples | examples/s |\n"
              "|---|---|---|---|---|---|---|---|\n")
    lines = []
    for r in rows:
        unparseable = "" if r["unparseable_share"] is None else f"{r['unparseable_share']:.1%}"
        lines.append(f"| {r['variant']} | {r['strategy']} | {r['scoring']} | {r['accuracy']:.3f} "
                     f"[{r['accuracy_ci_low']:.3f}, {r['accuracy_ci_high']:.3f}] | {r['macro_f1']:.3f} | {unparseable} "
                     f"| {r['examples']} | {r['examples_per_second']:.1f} |")
    return header + "\n".join(lines) + "\n"


def skipped_lines(files: list[Path]) -> list[str]:
    """Variants that were not made or scored here, with the reason."""
    lines = []
    for path in files:
        summary = parse_json_row(path.read_text(), str(path), required=("variant",))
        if summary.get("skipped"):
            lines.append(f"- `{summary['variant']}`: skipped — {summary['skipped']}")
    return lines


def deployment_table(bench: dict, rows: list[dict], reference: str = "trained") -> str:
    """Cost of each deployable variant beside its accuracy and the change against ``reference``."""
    accuracy = {r["variant"]: r for r in rows if r["strategy"] == "zero_shot" and r["scoring"] == "choice"}
    base_accuracy = accuracy.get(reference, {}).get("accuracy")
    sizes = sorted({size for v in bench["variants"].values() for size in v["tokens_per_second"]}, key=int)
    header = ("| variant | size MB | load s | TTFT ms | token p50 / p95 ms | "
              + " | ".join(f"tokens/s @{size}" for size in sizes) + " | peak RSS MB | accuracy [95% CI] | Δ accuracy |\n"
              + "|---" * (8 + len(sizes)) + "|\n")
    lines = []
    for name, v in bench["variants"].items():
        scored = accuracy.get(name)
        score = f"{scored['accuracy']:.3f} [{scored['accuracy_ci_low']:.3f}, {scored['accuracy_ci_high']:.3f}]" if scored else ""
        delta = f"{scored['accuracy'] - base_accuracy:+.3f}" if scored and base_accuracy is not None else ""
        speeds = " | ".join(f"{v['tokens_per_second'].get(size, '')}" for size in sizes)
        lines.append(f"| {name} | {v['size_mb']} | {v['load_seconds']} | {v['ttft_ms']} | "
                     f"{v['token_latency_ms']['p50']} / {v['token_latency_ms']['p95']} | {speeds} | "
                     f"{v.get('peak_rss_mb', '')} | {score} | {delta} |")
    return header + "\n".join(lines) + "\n"
