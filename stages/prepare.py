"""Stage prepare: clean, label, dedupe and split data/raw into data/prepared/{train,val,test}.jsonl.

    dvc exp run -S data.test_size=200 -S data.rating_margin=1.0
    dvc exp run -S data=gsm8k                         # a generative task: prompts and references

Classification rows become a normalised text and a label (split stratified by label); the
generative tasks' rows a prompt and its references (split by data.group_field where set, so
e.g. a SQuAD article's questions stay in one split).
"""

import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))  # this tree's code: see tunelab.stage

from tunelab.config.load import read_params, to_section
from tunelab.config.schema import DataConfig
from tunelab.data.cleaning import clean
from tunelab.data.readers import read_records
from tunelab.data.split import check_no_leakage, group_counts, label_counts, split_examples
from tunelab.io.atomic import write_jsonl
from tunelab.layout import LAYOUT
from tunelab.stage import run_stage
from tunelab.tracking.mlflow_run import stage_run


def main() -> None:
    params = read_params()
    config = to_section(DataConfig, "data", params.get("data"))
    with stage_run("prepare", params, sections=("data",)) as run:
        raw_file = json.loads((LAYOUT.raw / "source.json").read_text())["file"]
        examples, cleaning = clean(read_records(LAYOUT.raw, raw_file, config.format), config)
        splits = split_examples(examples, config)
        stats = {
            "task": config.task,
            "raw_rows": cleaning.raw_rows,
            "dropped": dict(cleaning.dropped),
            "examples": len(examples),
            "split_sizes": {name: len(rows) for name, rows in splits.items()},
            **({"labels": label_counts(splits)} if config.classifies else {}),
            **({"groups": group_counts(splits, config.group_field)} if config.group_field else {}),
            "unused_examples": len(examples) - sum(len(rows) for rows in splits.values()),
            "overlap": check_no_leakage(splits),
        }
        # One atomic write per file: DVC reruns the stage if any of them is missing.
        for name, rows in splits.items():
            write_jsonl(LAYOUT.prepared / f"{name}.jsonl", rows)
        run.write_metrics(LAYOUT.prepared / "stats.json", stats)
        run.log_metrics({f"{name}_examples": size for name, size in stats["split_sizes"].items()})
        run.log_metrics({f"dropped_{reason}": count for reason, count in stats["dropped"].items()})
        run.log_artifact(LAYOUT.prepared / "stats.json")
        print(f"prepare: {stats['split_sizes']} from {cleaning.raw_rows} raw rows, dropped {stats['dropped']}")


if __name__ == "__main__":
    run_stage(main)
