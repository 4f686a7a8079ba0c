"""Stage align: a second training phase on the SFT model, with TRL's trainers as they are.

    dvc exp run                        # align=none: the stage records that it was skipped
    dvc exp run -S align=dpo           # also kto, orpo (preference pairs: the preferences stage)
    dvc exp run -S align=grpo          # also rloo (rewards: align.rewards, tunelab.alignment.rewards)
    dvc exp run -S align=dpo -S align.beta=0.3 -S align.max_steps=60

A new LoRA adapter on the merged SFT model (models/trained merged into models/base) learns; the
reference is the same model with that adapter disabled. The result is merged and saved as plain
float32 weights in models/aligned, which evaluate@aligned scores like the trained model. Killed
mid-run, the next run resumes from the newest complete checkpoint (tunelab.training.checkpoints).
Per-step figures (loss, reward margins and preference accuracy; mean reward, its spread, the
share of groups whose rewards were all equal, KL, completion length) go to MLflow and to
metrics/align/*.csv (DVC plots).
"""

import json
import shutil
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))  # this tree's code: see tunelab.stage

from tunelab.alignment.methods import ALIGN_METHODS
from tunelab.alignment.preferences import alignment_rows
from tunelab.config.load import read_params, to_section
from tunelab.config.schema import AlignConfig, DataConfig
from tunelab.errors import TunelabError
from tunelab.evaluation.tasks import TASKS
from tunelab.io.atomic import atomic_dir, write_csv
from tunelab.io.jsonl import read_jsonl
from tunelab.models.loading import STRATEGY_FILE, merged_model, trained_recipe
from tunelab.paths import PATHS, SKIPPED, Paths
from tunelab.prompts.formatting import load_tokenizer
from tunelab.stage import run_stage
from tunelab.tracking.mlflow_run import StageRun, stage_run


def skip(paths: Paths, tracking: StageRun, reason: str) -> None:
    """align=none: outputs that say so (evaluate@aligned and the report read them), and no model."""
    with atomic_dir(paths.aligned_model) as folder:
        (folder / SKIPPED).write_text(reason + "\n")
    with atomic_dir(paths.align_curves) as folder:  # DVC can neither plot nor restore an empty folder
        (folder / "loss.csv").write_text("step,loss\n")
    tracking.write_metrics(paths.align_metrics, {"method": "none", "skipped": reason})
    print(f"align: skipped: {reason}")


def write_curves(paths: Paths, log_history: list[dict], curves: tuple[str, ...]) -> None:
    """One CSV per logged figure (step, value), for dvc plots; TRL's names with / become _."""
    with atomic_dir(paths.align_curves) as folder:
        for key in curves:
            rows = [{"step": row["step"], key: row[key]} for row in log_history if key in row]
            if rows:
                write_csv(folder / f"{key.replace('/', '_')}.csv", rows)


def save_aligned(paths: Paths, model, tokenizer, sft_strategy: str, method: str) -> None:
    """Merged float32 weights, loaded like a fully fine-tuned model (tunelab.models.loading)."""
    from tunelab.training.strategies import with_kv_cache

    with atomic_dir(paths.aligned_model) as folder:
        with_kv_cache(model).save_pretrained(folder, safe_serialization=True)  # TRL's Trainer turned it off
        tokenizer.save_pretrained(folder)
        recipe = {"strategy": f"{sft_strategy}+{method}", "adapter": False, "prompt_learning": False,
                  "aligned_with": method}
        (folder / STRATEGY_FILE).write_text(json.dumps(recipe, indent=2) + "\n")


def run(paths: Paths, align: AlignConfig, data: DataConfig, tracking: StageRun) -> None:
    """Align the SFT model under ``paths`` with align.method (or record that align=none skips)."""
    method = ALIGN_METHODS[align.method]
    if method.trainer is None:
        skip(paths, tracking, "align=none (dvc exp run -S align=dpo, or kto, orpo, grpo, rloo, aligns the SFT model)")
        return
    sft = trained_recipe(paths.trained_model)
    if sft["prompt_learning"]:
        raise TunelabError(f"align.method: {align.method} trains a LoRA adapter on the merged SFT model, and "
                           f"strategy={sft['strategy']}'s virtual tokens cannot be merged; use lora, ia3, full, ...")
    from transformers import set_seed  # here, not above: align=none skips in a second, without torch

    from tunelab.alignment.run import AlignTelemetry, build_align_trainer
    from tunelab.training.checkpoints import MarkCompleteCheckpoints, checkpoint_dir, resumable_checkpoint

    set_seed(align.seed)
    tokenizer = load_tokenizer(paths.base_model)
    train_file = paths.split(paths.formatted, "train")
    # what the method learns from: the preferences stage's pairs, or the train prompts to sample
    pairs = read_jsonl(paths.preferences) if method.uses_pairs else []
    rows = alignment_rows(read_jsonl(train_file), tokenizer) if method.rewarded else []
    model = merged_model(paths.trained_model, paths.base_model)
    checkpoints = checkpoint_dir((align,), [train_file, paths.preferences], paths.trained_model, stage="align",
                                 root=paths.checkpoints)
    telemetry = AlignTelemetry(tracking, method.curves)
    trainer = build_align_trainer(method, align, model, tokenizer, TASKS[data.task], pairs, rows, checkpoints,
                                  [telemetry, MarkCompleteCheckpoints()])
    resume_from, notes = resumable_checkpoint(checkpoints)
    for note in notes:
        print(f"align: {note}")
    print(f"align: {align.method} on the merged {sft['strategy']} model, "
          f"{'resuming from ' + resume_from if resume_from else 'from the start'}")
    started = time.perf_counter()
    trainer.train(resume_from_checkpoint=resume_from)
    seconds = round(time.perf_counter() - started, 1)
    save_aligned(paths, trainer.model.merge_and_unload(), tokenizer, sft["strategy"], align.method)
    history = trainer.state.log_history
    write_curves(paths, history, method.curves)
    metrics = {"method": align.method, "train_seconds": seconds, "steps": trainer.state.global_step,
               "resumed_from": resume_from, **({"pairs": len(pairs)} if method.uses_pairs else {}),
               **telemetry.summary(history)}
    tracking.write_metrics(paths.align_metrics, metrics)
    tracking.log_artifact(paths.align_metrics)
    shutil.rmtree(checkpoints, ignore_errors=True)  # finished: DVC caches the result
    print(f"align: {align.method}: {trainer.state.global_step} steps in {seconds:.0f} s; {metrics}")


def main() -> None:
    params = read_params()
    align = to_section(AlignConfig, "align", params.get("align"))
    data = to_section(DataConfig, "data", params.get("data"))
    ALIGN_METHODS[align.method].check(align)
    with stage_run("align", params, sections=("align",), system_metrics=True) as tracking:
        run(PATHS, align, data, tracking)


if __name__ == "__main__":
    run_stage(main)
