"""Stage preferences: the preference pairs DPO, KTO and ORPO learn from (align.preferences).

    dvc exp run -S align=dpo                                    # pairs built from the task (the default source)
    dvc exp run -S align=dpo -S align.preferences.samples=8     # more samples per prompt, more pairs
    dvc exp run -S align=dpo -S align.preferences.source=file -S align.preferences.path=$PWD/pairs.jsonl
    dvc exp run -S align=kto -S align.preferences.source=file -S align.preferences.path=$PWD/rated.jsonl  # unpaired

From the task: for the first ``align.preferences.prompts`` formatted train rows, the SFT model
samples ``samples`` answers (seeded); chosen is the gold answer, rejected a sample the task scores
wrong, and prompts the model always answered right are counted and skipped. Its own cached output,
so changing DPO's beta does not sample again. From a file: TRL's pairs (prompt/chosen/rejected), or
for KTO its unpaired rows (prompt/completion/label); the check stage fingerprints the file, so
edited bytes rerun this stage. No row may come from a test row (checked). Other alignment methods
need no pairs: the stage records that it was skipped.
"""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))  # this tree's code: see tunelab.stage

from tunelab.alignment.methods import ALIGN_METHODS, PAIRS
from tunelab.alignment.preferences import (
    alignment_rows,
    check_no_test_rows,
    check_preference_rows,
    is_unpaired,
    pairs_from_task,
    rows_from_file,
)
from tunelab.config.load import read_params, to_section
from tunelab.config.schema import AlignConfig, DataConfig
from tunelab.errors import TunelabError
from tunelab.evaluation.tasks import TASKS
from tunelab.io.atomic import write_jsonl
from tunelab.io.files import sha256_of
from tunelab.io.jsonl import read_jsonl
from tunelab.paths import PATHS, TRAINED, Paths
from tunelab.prompts.formatting import load_tokenizer
from tunelab.stage import run_stage
from tunelab.tracking.mlflow_run import StageRun, stage_run


def build_pairs(paths: Paths, align: AlignConfig, data: DataConfig, tokenizer) -> tuple[list[dict], dict]:
    settings = align.preferences
    if settings.source == "file":
        path = Path(settings.path)
        rows, stats = rows_from_file(path, settings.fields)
        return rows, {**stats, "sha256": sha256_of(path)}
    from tqdm import tqdm

    from tunelab.models.loading import load_variant

    rows = alignment_rows(read_jsonl(paths.split(paths.formatted, "train")), tokenizer)
    model = load_variant(TRAINED, paths)
    with tqdm(total=min(settings.prompts, len(rows)), desc="preferences: sampling the SFT model", unit="prompt") as bar:
        return pairs_from_task(model, tokenizer, TASKS[data.task], rows, settings, align.seed,
                               progress=lambda done: bar.update(1))


def run(paths: Paths, align: AlignConfig, data: DataConfig, tracking: StageRun) -> None:
    """The preference pairs align.method learns from (none where it needs none) in ``paths.preferences``."""
    method = ALIGN_METHODS[align.method]
    if not method.uses_pairs:
        write_jsonl(paths.preferences, [])
        tracking.write_metrics(paths.preference_stats, {"skipped": f"align.method={align.method} learns from no "
                                                               "preference pairs"})
        print(f"preferences: skipped: align.method={align.method} needs no pairs")
        return
    tokenizer = load_tokenizer(paths.base_model)
    pairs, stats = build_pairs(paths, align, data, tokenizer)
    if method.data == PAIRS and is_unpaired(pairs):
        raise TunelabError(f"align.method={align.method} learns from pairs (prompt, chosen, rejected); "
                           f"{align.preferences.path} holds unpaired rows (prompt, completion, label): use align=kto")
    check_preference_rows(pairs, str(align.preferences.path or paths.preferences))
    check_no_test_rows(pairs, read_jsonl(paths.split(paths.formatted, "test")), tokenizer)
    write_jsonl(paths.preferences, pairs)
    tracking.write_metrics(paths.preference_stats, stats)
    tracking.log_metrics({k: v for k, v in stats.items() if isinstance(v, (int, float))})
    print(f"preferences: {len(pairs)} pairs ({stats})")


def main() -> None:
    params = read_params()
    align = to_section(AlignConfig, "align", params.get("align"))
    data = to_section(DataConfig, "data", params.get("data"))
    with stage_run("preferences", params, sections=("align",)) as tracking:
        run(PATHS, align, data, tracking)


if __name__ == "__main__":
    run_stage(main)
