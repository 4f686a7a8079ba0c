"""Line-numbered JSONL reading: a broken row is reported as ``file:line``."""

import json
from pathlib import Path

from tunelab.errors import TunelabError
from tunelab.io.text import numbered_lines

TOO_DEEP = "nested deeper than Python's JSON reader can follow (about 1,000 levels); a row is an object of fields"


def read_jsonl(path: str | Path, required: tuple[str, ...] = ()) -> list[dict]:
    """Read a JSONL file; every row must be an object holding the ``required`` fields."""
    return [row for _, row in numbered_rows(path, required)]


def numbered_rows(path: str | Path, required: tuple[str, ...] = ()) -> list[tuple[int, dict]]:
    """(line number, row) of a JSONL file's non-blank lines, for messages that name the line."""
    path = Path(path)
    if not path.is_file():
        raise TunelabError(f"{path}: file not found")
    return [(line_number, parse_json_row(line, f"{path}:{line_number}", required))
            for line_number, line in numbered_lines(path) if line.strip()]


def parse_json_row(line: str, where: str, required: tuple[str, ...] = ()) -> dict:
    try:
        row = json.loads(line)
    except json.JSONDecodeError as error:
        raise TunelabError(f"{where}: not valid JSON ({error.msg} at column {error.colno})") from None
    except RecursionError:
        raise TunelabError(f"{where}: {TOO_DEEP}") from None
    if not isinstance(row, dict):
        raise TunelabError(f"{where}: expected a JSON object, got {type(row).__name__}")
    check_fields(row, required, where)
    return row


def check_fields(row: dict, required: tuple[str, ...], where: str) -> None:
    """Every ``required`` field is in the row, or one line naming the first missing one."""
    missing = [name for name in required if name not in row]
    if missing:
        raise TunelabError(f"{where}: missing field {missing[0]!r} (fields present: {sorted(row)})")
