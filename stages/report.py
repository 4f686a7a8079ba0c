"""Stage report: every evaluated variant × prompt strategy, and what each deployable variant costs.

    dvc exp run                 # runs last; prints the tables into the log, writes metrics/report.md
    dvc metrics show            # the same figures from metrics/eval.json and metrics/bench.json

Accuracy intervals are Wilson 95% score intervals; macro-F1 intervals (in metrics/eval/*.json)
are percentile bootstraps.
"""

import json
from pathlib import Path

from tunelab.config.load import read_params
from tunelab.io.atomic import write_json, write_text
from tunelab.reporting.tables import deployment_table, eval_rows, markdown_table, metrics_by_key, skipped_lines
from tunelab.stage import run_stage
from tunelab.tracking.mlflow_run import stage_run

EVAL_DIR = Path("metrics/eval")
BENCH = Path("metrics/bench.json")
EVAL_METRICS = Path("metrics/eval.json")
REPORT = Path("metrics/report.md")
INTRO = ("# tunelab report\n\nEvery model variant × prompt strategy on the same frozen test split. Accuracy with its "
         "Wilson 95% interval; `choice` scores answer-choice log-likelihood, `generate` parses generated text "
         "(unparseable answers count as wrong).\n\n")


def eval_files(params: dict) -> list[Path]:
    """base, trained, then the quantized variants in conf/quantize's order."""
    order = ["base", "trained", *params.get("quantize", {}).get("variants", [])]
    return [EVAL_DIR / f"{name}.json" for name in order if (EVAL_DIR / f"{name}.json").is_file()]


def deployment_section(rows: list[dict]) -> str:
    if not BENCH.is_file():
        return ""
    bench = json.loads(BENCH.read_text())
    env = bench["environment"]
    where = env.get("gpu") or f"{env['cpu']}, {env['torch_threads']} threads"
    return (f"\n## Deployable variants\n\nMeasured on {where}, torch {env['torch']}; batch 1 latency, "
            f"{bench['settings']['new_tokens']} new tokens per sequence, median of {bench['settings']['repeats']}; "
            "Δ accuracy against the unquantized trained model.\n\n" + deployment_table(bench, rows))


def main() -> None:
    params = read_params()
    files = eval_files(params)
    rows = eval_rows(files)
    with stage_run("report", params, sections=()) as run:
        write_json(EVAL_METRICS, metrics_by_key(rows))
        skipped = skipped_lines(files)
        text = INTRO + markdown_table(rows) + ("\nNot evaluated here:\n\n" + "\n".join(skipped) + "\n" if skipped else "")
        text += deployment_section(rows)
        write_text(REPORT, text)
        run.log_artifact(REPORT)
        run.log_artifact(EVAL_METRICS)
        print(text)


if __name__ == "__main__":
    run_stage(main)
