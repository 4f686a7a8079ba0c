"""Atomic outputs: a killed stage leaves no half-written file or folder that a later stage trusts.

Everything is first written under a sibling temporary name (``<name>.tmp-<pid>``) and renamed
into place only when complete. Renames within one folder are atomic on POSIX file systems.
Leftover temporaries of a killed run are removed by the next run that writes the same output.
"""

import csv
import io
import json
import os
import shutil
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

TEMP_MARKER = ".tmp-"


def _temp_sibling(final: Path) -> Path:
    return final.with_name(f"{final.name}{TEMP_MARKER}{os.getpid()}")


def _remove(path: Path) -> None:
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path)
    elif path.exists() or path.is_symlink():
        path.unlink()


def remove_stale_temporaries(final: Path) -> None:
    """Delete what killed runs left behind for this output."""
    for stale in final.parent.glob(f"{final.name}{TEMP_MARKER}*"):
        _remove(stale)


@contextmanager
def atomic_path(final: str | Path, *, is_dir: bool) -> Iterator[Path]:
    """Yield a temporary path to write; move it to ``final`` only if the block succeeds."""
    final = Path(final)
    final.parent.mkdir(parents=True, exist_ok=True)
    remove_stale_temporaries(final)
    temp = _temp_sibling(final)
    if is_dir:
        temp.mkdir()
    try:
        yield temp
    except BaseException:
        _remove(temp)
        raise
    _remove(final)
    os.replace(temp, final)


def atomic_dir(final: str | Path):
    """``with atomic_dir("models/base") as tmp:`` write into ``tmp``; it becomes the folder."""
    return atomic_path(final, is_dir=True)


def write_text(path: str | Path, text: str) -> None:
    with atomic_path(path, is_dir=False) as temp:
        temp.write_text(text, encoding="utf-8")


def write_json(path: str | Path, obj: Any) -> None:
    write_text(path, json.dumps(obj, indent=2, ensure_ascii=False) + "\n")


def write_jsonl(path: str | Path, rows: Iterable[dict]) -> None:
    """One JSON object per line. No rows is one blank line, not an empty file: DVC warns that an
    empty output "is empty" on every run, and every JSONL reader (tunelab.io.jsonl) skips blank lines."""
    write_text(path, "".join(json.dumps(row, ensure_ascii=False) + "\n" for row in rows) or "\n")


def write_csv(path: str | Path, rows: list[dict]) -> None:
    """A header from the first row's keys, then one line per row (DVC plots read this)."""
    buffer = io.StringIO()
    columns = list(rows[0]) if rows else []
    writer = csv.DictWriter(buffer, fieldnames=columns, lineterminator="\n")
    writer.writeheader()
    writer.writerows(rows)
    write_text(path, buffer.getvalue())
