"""Line-numbered JSONL reading: a broken row is reported as ``file:line``."""

import json
from pathlib import Path

from tunelab.errors import TunelabError


def read_jsonl(path: str | Path, required: tuple[str, ...] = ()) -> list[dict]:
    """Read a JSONL file; every row must be an object holding the ``required`` fields."""
    path = Path(path)
    if not path.is_file():
        raise TunelabError(f"{path}: file not found")
    rows = []
    with path.open(encoding="utf-8") as lines:
        for line_number, line in enumerate(lines, start=1):
            if not line.strip():
                continue
            rows.append(parse_json_row(line, f"{path}:{line_number}", required))
    return rows


def parse_json_row(line: str, where: str, required: tuple[str, ...] = ()) -> dict:
    try:
        row = json.loads(line)
    except json.JSONDecodeError as error:
        raise TunelabError(f"{where}: not valid JSON ({error.msg} at column {error.colno})") from None
    if not isinstance(row, dict):
        raise TunelabError(f"{where}: expected a JSON object, got {type(row).__name__}")
    missing = [name for name in required if name not in row]
    if missing:
        raise TunelabError(f"{where}: missing field {missing[0]!r} (fields present: {sorted(row)})")
    return row
