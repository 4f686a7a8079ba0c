"""Stage report: every evaluated variant × prompt strategy with what it cost, regenerated from metrics.

    dvc exp run                 # runs last; prints the tables into the log, writes metrics/report.md
    dvc metrics show            # the same figures from metrics/eval.json (accuracy, train time, speed, size)
    dvc exp show / dvc metrics diff / dvc plots diff   # the same across experiments (a sweep)

Accuracy intervals are Wilson 95% score intervals; macro-F1 intervals (in metrics/eval/*.json)
are percentile bootstraps.
"""

import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))  # this tree's code: see tunelab.stage

from tunelab.config.load import read_params, to_section
from tunelab.config.schema import EvalConfig
from tunelab.io.atomic import write_csv, write_json, write_text
from tunelab.reporting.plots import save_tradeoff_figures
from tunelab.reporting.tables import (deployment_table, eval_rows, markdown_table, metrics_by_key, pipeline_summary,
                                      row_key, skipped_lines, tradeoff_rows, variants_table, with_costs)
from tunelab.stage import run_stage
from tunelab.tracking.lineage import pipeline_output_hashes
from tunelab.tracking.mlflow_run import stage_run

EVAL_DIR = Path("metrics/eval")
BASE = Path("metrics/base.json")
TRAIN = Path("metrics/train.json")
QUANTIZE = Path("metrics/quantize.json")
BENCH = Path("metrics/bench.json")
EVAL_METRICS = Path("metrics/eval.json")
REPORT = Path("metrics/report.md")
FIGURES = Path("metrics/report")
VARIANTS_CSV = FIGURES / "variants.csv"
TRADEOFFS_CSV = FIGURES / "tradeoffs.csv"
INTRO = ("# tunelab report\n\nEvery model variant × prompt strategy on the same frozen test split, with what it cost. "
         "Accuracy with its Wilson 95% interval; `choice` scores answer-choice log-likelihood, `generate` parses "
         "generated text (unparseable answers count as wrong). Train time: seconds from the base model to the variant "
         "(training, plus quantization for a deployable variant); tokens/s and latency: batch 1 decoding, from the "
         "benchmark.\n\n")


def eval_files(params: dict) -> list[Path]:
    """base, trained, then the quantized variants in conf/quantize's order."""
    order = ["base", "trained", *params.get("quantize", {}).get("variants", [])]
    return [EVAL_DIR / f"{name}.json" for name in order if (EVAL_DIR / f"{name}.json").is_file()]


def deployment_section(rows: list[dict], headline: tuple[str, str]) -> str:
    if not BENCH.is_file():
        return ""
    bench = json.loads(BENCH.read_text())
    env = bench["environment"]
    where = env.get("gpu") or f"{env['cpu']}, {env['torch_threads']} threads"
    return (f"\n## Deployable variants\n\nMeasured on {where}, torch {env['torch']}; batch 1 latency, "
            f"{bench['settings']['new_tokens']} new tokens per sequence, median of {bench['settings']['repeats']}; "
            f"accuracy of {'/'.join(headline)}, Δ against the unquantized trained model.\n\n"
            + deployment_table(bench, rows, headline))


def read_json(path: Path) -> dict:
    return json.loads(path.read_text()) if path.is_file() else {}


def figures_section(paths: list[Path]) -> str:
    return "\n" + "".join(f"![{p.stem.replace('_', ' ')}]({p.relative_to(REPORT.parent)})\n" for p in paths)


def main() -> None:
    params = read_params()
    headline = to_section(EvalConfig, "eval", params.get("eval")).headline_result()
    files = eval_files(params)
    rows = with_costs(eval_rows(files), read_json(BASE), read_json(TRAIN) or None, read_json(QUANTIZE), read_json(BENCH))
    with stage_run("report", params, sections=()) as run:
        by_key = metrics_by_key(rows)
        write_json(EVAL_METRICS, by_key)
        write_csv(VARIANTS_CSV, [{"variant": row_key(r), **{k: r[k] for k in (
            "accuracy", "accuracy_ci_low", "accuracy_ci_high", "train_seconds", "token_latency_p50_ms",
            "tokens_per_second", "size_mb")}} for r in rows])
        write_csv(TRADEOFFS_CSV, tradeoff_rows(rows, headline))
        figures = save_tradeoff_figures(rows, FIGURES, f"{params.get('strategy', {}).get('name', '?')}, "
                                                       f"lr {params.get('train', {}).get('learning_rate', '?')}")
        skipped = skipped_lines(files)
        text = INTRO + variants_table(rows) + ("\nNot evaluated here:\n\n" + "\n".join(skipped) + "\n" if skipped else "")
        text += figures_section(figures)
        text += "\n## Scores in detail\n\n" + markdown_table(rows) + deployment_section(rows, headline)
        write_text(REPORT, text)
        for path in (REPORT, EVAL_METRICS, VARIANTS_CSV, TRADEOFFS_CSV, *figures):
            run.log_artifact(path, "report" if path.parent == FIGURES else None)
        run.summarize_pipeline(pipeline_summary(by_key, headline), pipeline_output_hashes())
        print(text)


if __name__ == "__main__":
    run_stage(main)
