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
