"""Checkpoints that cannot poison a resume: keyed by everything the run depends on, resumed
only when complete.

A killed run resumes from its newest complete checkpoint, else the one before, else from
scratch, and says which; an incomplete one (killed or out of disk mid-save, or a file cut short
since) is removed, never handed to the Trainer, which would crash on it on every rerun.
"""

import hashlib
import json
import re
import shutil
from pathlib import Path

from transformers import TrainerCallback

from tunelab.io.atomic import write_json
from tunelab.io.files import folder_sha256
from tunelab.paths import PATHS

COMPLETE = "tunelab-complete.json"  # written into a checkpoint once the Trainer has saved all of it
CHECKPOINT_STEP = re.compile(r"^checkpoint-(\d+)$")


def checkpoint_dir(settings: tuple, inputs: list[Path], model: Path, stage: str = "train",
                   root: Path = PATHS.checkpoints) -> Path:
    """Where this exact run of ``stage`` keeps its checkpoints: a resumed run must match its config
    sections, data and the starting model's content (a changed base must never resume onto weights
    trained on the old one)."""
    digest = hashlib.sha256(json.dumps([repr(section) for section in settings]).encode())
    for path in inputs:
        digest.update(path.read_bytes())
    digest.update(folder_sha256(model).encode())
    return root / f"{stage}-{digest.hexdigest()[:12]}"


class MarkCompleteCheckpoints(TrainerCallback):
    """Records, in each checkpoint the Trainer has finished saving, the size of every file in it.

    The Trainer writes a checkpoint in place (weights, optimizer, scheduler, RNG, then
    trainer_state.json) and calls ``on_save`` after the last of them; a kill or a full disk
    before that leaves a folder with no record, and a file cut short afterwards no longer
    matches its recorded size. Either way :func:`resumable_checkpoint` will not resume from it.
    """

    def on_save(self, args, state, control, **kwargs):
        if state.is_world_process_zero:
            folder = Path(args.output_dir) / f"checkpoint-{state.global_step}"
            files = {p.relative_to(folder).as_posix(): p.stat().st_size
                     for p in sorted(folder.rglob("*")) if p.is_file() and p.name != COMPLETE}
            write_json(folder / COMPLETE, {"step": state.global_step, "files": files})


def checkpoint_problem(folder: Path) -> str | None:
    """Why a checkpoint cannot be resumed from, or None when it is complete."""
    try:
        record = json.loads((folder / COMPLETE).read_text())
    except (OSError, ValueError):
        return "incomplete (its save never finished: killed, or the disk was full)"
    for name, size in record["files"].items():
        path = folder / name
        if not path.is_file():
            return f"{name} is missing"
        if path.stat().st_size != size:
            return f"{name} is truncated ({path.stat().st_size} of {size} bytes)"
    try:
        json.loads((folder / "trainer_state.json").read_text())
    except (OSError, ValueError):
        return "trainer_state.json is unreadable"
    return None


def resumable_checkpoint(folder: Path) -> tuple[str | None, list[str]]:
    """The newest complete checkpoint in ``folder`` (None: start from scratch), and a note for
    each newer one that was not, which is removed so the Trainer never sees it."""
    steps = sorted(((int(m.group(1)), path) for path in (folder.iterdir() if folder.is_dir() else [])
                    if (m := CHECKPOINT_STEP.match(path.name)) and path.is_dir()), reverse=True)
    notes = []
    for _, path in steps:
        if (problem := checkpoint_problem(path)) is None:
            return str(path), notes
        notes.append(f"{path.name}: {problem}; not resumed from, removed")
        shutil.rmtree(path)
    return None, notes
