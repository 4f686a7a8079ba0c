"""Stage report: every evaluated variant × prompt strategy in one table (metrics/report.md).

    dvc exp run                 # runs last; prints the table
    dvc metrics show            # the same figures from metrics/eval.json; `dvc metrics diff` across experiments

Accuracy intervals are Wilson 95% score intervals; macro-F1 intervals (in metrics/eval/*.json)
are percentile bootstraps.
"""

import sys
from pathlib import Path

from tunelab.config.load import read_params
from tunelab.io.atomic import write_json, write_text
from tunelab.reporting.tables import eval_rows, markdown_table, metrics_by_key
from tunelab.stage import run_stage
from tunelab.tracking.mlflow_run import stage_run

EVAL_METRICS = Path("metrics/eval.json")
REPORT = Path("metrics/report.md")
INTRO = ("# tunelab report\n\nEvery model variant × prompt strategy on the same frozen test split. Accuracy with its "
         "Wilson 95% interval; `choice` scores answer-choice log-likelihood, `generate` parses generated text "
         "(unparseable answers count as wrong).\n\n")


def main() -> None:
    params = read_params()
    files = [Path(name) for name in sys.argv[1:]]
    rows = eval_rows(files)
    with stage_run("report", params, sections=()) as run:
        write_json(EVAL_METRICS, metrics_by_key(rows))
        table = markdown_table(rows)
        write_text(REPORT, INTRO + table)
        run.log_artifact(REPORT)
        run.log_artifact(EVAL_METRICS)
        print(table)


if __name__ == "__main__":
    run_stage(main)
