"""Read raw files into plain dicts, each remembering where it came from (``file:line``)."""

import csv
import io
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from tunelab.errors import TunelabError
from tunelab.io.jsonl import parse_json_row
from tunelab.io.text import numbered_lines, read_text


@dataclass(frozen=True)
class RawRecord:
    fields: dict
    where: str
    """``file:line`` (or ``file:row N``) for error messages."""


def read_vader_tsv(path: Path) -> Iterator[RawRecord]:
    """The VADER ground-truth files: ``id<TAB>mean rating<TAB>text`` per line, CRLF endings."""
    for line_number, line in numbered_lines(path):
        if not line.strip():
            continue
        where = f"{path}:{line_number}"
        parts = line.split("\t")
        if len(parts) != 3:
            raise TunelabError(f"{where}: expected 3 tab-separated fields (id, rating, text), got {len(parts)}")
        record_id, rating, text = parts
        try:
            rating_value = float(rating)
        except ValueError:
            raise TunelabError(f"{where}: rating {rating!r} is not a number") from None
        yield RawRecord({"id": record_id, "rating": rating_value, "text": text}, where)


def read_jsonl_records(path: Path) -> Iterator[RawRecord]:
    for line_number, line in numbered_lines(path):
        if line.strip():
            where = f"{path}:{line_number}"
            yield RawRecord(parse_json_row(line, where), where)


def read_csv_records(path: Path) -> Iterator[RawRecord]:
    reader = csv.DictReader(io.StringIO(read_text(path), newline=""))
    for row in reader:
        where = f"{path}:{reader.line_num}"
        columns = len(reader.fieldnames)
        if None in row:
            raise TunelabError(f"{where}: more values than the {columns} header columns")
        if None in row.values():
            given = sum(value is not None for value in row.values())
            raise TunelabError(f"{where}: {given} values, but the header has {columns} columns")
        yield RawRecord(dict(row), where)


def read_table_records(rows: list[dict], name: str) -> Iterator[RawRecord]:
    for index, row in enumerate(rows):
        yield RawRecord(row, f"{name}:row {index}")


def read_records(raw_dir: Path, file_name: str, raw_format: str) -> list[RawRecord]:
    """All records of the raw file ``file_name`` (named in data/raw/source.json)."""
    path = raw_dir / file_name
    if not path.exists():
        raise TunelabError(f"{path}: not found; run the fetch stage first")
    if raw_format == "vader_tsv":
        return list(read_vader_tsv(path))
    if raw_format == "jsonl":
        return list(read_jsonl_records(path))
    if raw_format == "csv":
        return list(read_csv_records(path))
    if raw_format == "parquet":
        import pandas

        return list(read_table_records(pandas.read_parquet(path).to_dict("records"), str(path)))
    import datasets

    loaded = datasets.load_from_disk(str(path))
    # A DatasetDict's splits are pooled: prepare makes its own split.
    parts = loaded.values() if isinstance(loaded, datasets.DatasetDict) else [loaded]
    return list(read_table_records([row for part in parts for row in part], str(path)))
