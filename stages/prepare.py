"""Stage prepare: clean, label, dedupe and split data/raw into data/prepared/{train,val,test}.jsonl.

    dvc exp run -S data.test_size=200 -S data.rating_margin=1.0
    dvc exp run -S data=gsm8k                         # a generative task: prompts and references

Classification rows become a normalised text and a label (split stratified by label); the
generative tasks' rows a prompt and its references (split by data.group_field where set, so
e.g. a SQuAD article's questions stay in one split). With data.train_source, that source's rows
are the train split and the main source gives val and test; a train row that asks what a val or
test row asks is dropped and counted. Each of eval.extra_test_sets is cleaned the same way (with
its own data keys) into data/prepared/extra_test.jsonl, less any row train or val has.
"""

import json
import sys
from dataclasses import replace
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))  # this tree's code: see tunelab.stage

from tunelab.config.load import read_extra_test_sets, read_params, to_section
from tunelab.config.schema import DataConfig
from tunelab.data.cleaning import clean, inferred_labels
from tunelab.data.readers import read_records
from tunelab.data.split import (
    check_no_leakage,
    group_counts,
    held_out_rows,
    label_counts,
    split_examples,
    with_test_from,
    with_train_from,
)
from tunelab.io.atomic import write_jsonl
from tunelab.paths import PATHS, Paths
from tunelab.stage import run_stage
from tunelab.tracking.mlflow_run import StageRun, stage_run


def read_fetched(folder: Path, provenance: dict, configured_format: str) -> list:
    """The rows fetch wrote, in the format the source decided (generated problems are JSONL) or data.format."""
    return read_records(folder, provenance["file"], provenance.get("format", configured_format))


def train_from_source(paths: Paths, splits: dict, config: DataConfig, provenance: dict) -> tuple[dict, dict]:
    """The splits with data.train_source's examples as train, and what became of its rows."""
    examples, cleaning = clean(read_fetched(paths.raw_train, provenance, config.format), config)
    splits, overlapping = with_train_from(splits, examples, config.train_size, config.seed)
    return splits, {"train_source": {"raw_rows": cleaning.raw_rows, "dropped": dict(cleaning.dropped),
                                     "examples": len(examples), "overlaps_evaluation": overlapping}}


def split_around_test(paths: Paths, examples: list[dict], config: DataConfig, provenance: dict) -> tuple[dict, dict]:
    """The seeded split; or, with data.test_source, its rows as the test split as they are, the
    main source's split into val and train; and what became of the test source's rows."""
    if config.test_source is None:
        return split_examples(examples, config), {}
    kept, cleaning = clean(read_fetched(paths.raw_test, provenance["test"], config.format), config)
    return with_test_from(examples, kept, config), {
        "test_source": {"raw_rows": cleaning.raw_rows, "dropped": dict(cleaning.dropped), "examples": len(kept)}}


def extra_test_sets(paths: Paths, sets: dict, config: DataConfig, provenance: dict,
                    splits: dict) -> tuple[list[dict], dict]:
    """Every extra test set's rows, each tagged with its ``test_set``, and what became of its raw rows."""
    rows, stats = [], {}
    for name, extra in sets.items():
        reading = extra.data_config(config)
        examples, cleaning = clean(read_fetched(paths.raw_extra(name), provenance["extra"][name], reading.format),
                                   reading)
        kept, overlapping = held_out_rows(examples, splits, extra.size, config.seed, f"eval.extra_test_sets.{name}")
        rows += [{"test_set": name, **example} for example in kept]
        stats[name] = {"raw_rows": cleaning.raw_rows, "dropped": dict(cleaning.dropped), "examples": len(examples),
                       "overlaps_train_or_val": overlapping, "rows": len(kept)}
    return rows, stats


def run(paths: Paths, config: DataConfig, extra_sets: dict, tracking: StageRun) -> None:
    """Clean, label, dedupe and split the fetched rows under ``paths`` into the prepared splits."""
    provenance = json.loads(paths.raw_provenance.read_text())
    records = read_fetched(paths.raw_main, provenance, config.format)
    if config.infers_labels:
        config = replace(config, labels=inferred_labels(records, config))
    examples, cleaning = clean(records, config)
    # with a train source, the main source's examples that val and test leave are unused
    splitting = replace(config, train_size=None) if config.train_source else config
    splits, test_source = split_around_test(paths, examples, splitting, provenance)
    train_source = {}
    if config.train_source is not None:
        splits, train_source = train_from_source(paths, splits, config, provenance["train"])
    from_elsewhere = {"train": bool(train_source), "test": bool(test_source)}
    used = sum(len(rows) for name, rows in splits.items() if not from_elsewhere.get(name))
    extra_rows, extra_stats = extra_test_sets(paths, extra_sets, config, provenance, splits)
    stats = {
        "task": config.task,
        "raw_rows": cleaning.raw_rows,
        "dropped": dict(cleaning.dropped),
        "examples": len(examples),
        "split_sizes": {name: len(rows) for name, rows in splits.items()},
        **({"label_names": config.labels, "labels": label_counts(splits)} if config.classifies else {}),
        **({"groups": group_counts(splits, config.group_field)} if config.group_field else {}),
        "unused_examples": len(examples) - used,
        **train_source,
        **test_source,
        **({"extra_test_sets": extra_stats} if extra_stats else {}),
        "overlap": check_no_leakage(splits),
    }
    # One atomic write per file: DVC reruns the stage if any of them is missing.
    for name, rows in splits.items():
        write_jsonl(paths.prepared / f"{name}.jsonl", rows)
    write_jsonl(paths.extra_test, extra_rows)  # empty without extra test sets: DVC tracks it either way
    tracking.write_metrics(paths.prepared / "stats.json", stats)
    tracking.log_metrics({f"{name}_examples": size for name, size in stats["split_sizes"].items()})
    tracking.log_metrics({f"dropped_{reason}": count for reason, count in stats["dropped"].items()})
    tracking.log_artifact(paths.prepared / "stats.json")
    print(f"prepare: {stats['split_sizes']} from {cleaning.raw_rows} raw rows, dropped {stats['dropped']}")


def main() -> None:
    params = read_params()
    config = to_section(DataConfig, "data", params.get("data"))
    extra_sets = read_extra_test_sets(params)
    with stage_run("prepare", params, sections=("data",)) as tracking:
        run(PATHS, config, extra_sets, tracking)


if __name__ == "__main__":
    run_stage(main)
