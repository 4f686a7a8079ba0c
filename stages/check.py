"""Stage check: the whole config validated, and the data source and base model fingerprinted,
before any other stage, on every run.

    dvc exp run        # runs first, always (dvc.yaml: always_changed), in about a second

Validation: every section of params.yaml against its dataclass, so a bad value anywhere (a
launcher with shell characters, a learning rate of 0, an unknown section) stops the pipeline
before a shell runs a command built from it or a stage starts heavy work.

Fingerprints: DVC sees only what dvc.yaml names, and params name a local data file
(data.source.path), a model folder (model.path) or a preference file (align.preferences.path)
outside the repository, so an in-place edit there would leave fetch, base or preferences cached
on the old bytes. This stage hashes them (a pinned sdist is its pin; a packaged GGUF its file)
into data/origin.json, models/origin.json and data/preferences/origin.json, which those stages
depend on: changed bytes rerun them; unchanged bytes write the same files, and every
later stage stays cached. It logs no MLflow run: it decides nothing and would add a run to
every invocation.
"""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))  # this tree's code: see tunelab.stage

from tunelab.alignment.preferences import preference_fingerprint
from tunelab.config.load import read_extra_test_sets, read_params, to_section
from tunelab.config.schema import AlignConfig, ModelConfig, SourceConfig
from tunelab.data.sources import source_fingerprint
from tunelab.io.atomic import write_json
from tunelab.models.base import model_fingerprint
from tunelab.paths import PATHS, Paths
from tunelab.stage import run_stage
from tunelab.validation import validate_config


def run(paths: Paths, params: dict) -> None:
    """Validate every section of ``params``, then write the three fingerprints under ``paths``."""
    validate_config(params)
    source = to_section(SourceConfig, "data.source", params["data"]["source"])
    model = to_section(ModelConfig, "model", params["model"])
    origin = source_fingerprint(source)
    for split in ("train", "test"):
        if split_source := params["data"].get(f"{split}_source"):
            origin[split] = source_fingerprint(to_section(SourceConfig, f"data.{split}_source", split_source))
    if extra_sets := read_extra_test_sets(params):
        origin["extra"] = {name: source_fingerprint(extra.source) for name, extra in extra_sets.items()}
    write_json(paths.data_origin, origin)
    write_json(paths.model_origin, model_fingerprint(model))
    write_json(paths.preference_origin, preference_fingerprint(to_section(AlignConfig, "align", params["align"]).preferences))
    print(f"check: config valid; data source and base model fingerprinted in {paths.data_origin}, {paths.model_origin}")


def main() -> None:
    run(PATHS, read_params())


if __name__ == "__main__":
    run_stage(main)
