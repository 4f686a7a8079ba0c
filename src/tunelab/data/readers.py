"""Read raw files into plain dicts, each remembering where it came from (``file:line``).

One registry entry per raw format (``data.format``); a new format is one ``READERS.register``
here.
"""

import csv
import io
import json
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

from tunelab.errors import TunelabError
from tunelab.io.jsonl import TOO_DEEP, parse_json_row
from tunelab.io.text import numbered_lines, read_text
from tunelab.registry import Registry


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


def read_json_records(path: Path) -> Iterator[RawRecord]:
    """A JSON array of objects (how Alpaca and LLaMA-Factory's datasets ship), each named by its index."""
    text = read_text(path)
    try:
        rows = json.loads(text)
    except json.JSONDecodeError as error:
        raise TunelabError(f"{path}: not valid JSON ({error.msg} at line {error.lineno} column {error.colno})") from None
    except RecursionError:
        raise TunelabError(f"{path}: {TOO_DEEP}") from None
    if not isinstance(rows, list):
        raise TunelabError(f"{path}: expected a JSON array of records, got {type(rows).__name__} (JSON lines: data.format=jsonl)")
    for index, row in enumerate(rows):
        if not isinstance(row, dict):
            raise TunelabError(f"{path}: record {index}: expected a JSON object, got {type(row).__name__}")
        yield RawRecord(row, f"{path}: record {index}")


def read_csv_records(path: Path) -> Iterator[RawRecord]:
    reader = csv.DictReader(io.StringIO(read_text(path), newline=""))
    check_header(reader.fieldnames or [], path)
    while (row := next_csv_row(reader, path)) is not None:
        where = f"{path}:{reader.line_num}"
        columns = len(reader.fieldnames)
        if None in row:
            raise TunelabError(f"{where}: more values than the {columns} header columns")
        if None in row.values():
            given = sum(value is not None for value in row.values())
            raise TunelabError(f"{where}: {given} values, but the header has {columns} columns")
        yield RawRecord(dict(row), where)


def next_csv_row(reader: csv.DictReader, path: Path) -> dict | None:
    try:
        return next(reader)
    except StopIteration:
        return None
    except csv.Error as error:  # e.g. a cell over csv.field_size_limit(), 128 KiB: one line, not a traceback
        # line_num counts the lines read before the failing row, which starts on the next one
        raise TunelabError(f"{path}:{reader.line_num + 1}: {error}; for longer texts use data.format=jsonl") from None


def check_header(names: list[str], path: Path) -> None:
    """csv.DictReader keeps the last of two columns of one name and drops the other unread."""
    repeated = sorted({name for name in names if names.count(name) > 1})
    if repeated:
        raise TunelabError(f"{path}:1: column {repeated[0]!r} appears {names.count(repeated[0])} times in the header; "
                           "name every column once")


def read_table_records(rows: list[dict], name: str) -> Iterator[RawRecord]:
    for index, row in enumerate(rows):
        yield RawRecord(row, f"{name}:row {index}")


def plain_arrow_type(arrow_type, where: str):
    """The type a column is read as: what JSON holds (text, numbers, booleans, lists, objects),
    dates and times as ISO text, decimals as text; anything else is refused, naming the column.
    Read through Arrow, not pandas, whose list cells are numpy arrays and whose times are
    Timestamps, neither of which the stages after read or write."""
    import pyarrow as pa
    import pyarrow.types as types

    if types.is_string(arrow_type) or types.is_large_string(arrow_type) or types.is_boolean(arrow_type) \
            or types.is_integer(arrow_type) or types.is_floating(arrow_type) or types.is_null(arrow_type):
        return arrow_type
    if types.is_temporal(arrow_type) and not types.is_duration(arrow_type) or types.is_decimal(arrow_type):
        return pa.string()
    if types.is_dictionary(arrow_type):
        return plain_arrow_type(arrow_type.value_type, where)
    if types.is_list(arrow_type) or types.is_large_list(arrow_type) or types.is_fixed_size_list(arrow_type):
        return pa.list_(plain_arrow_type(arrow_type.value_type, where))
    if types.is_struct(arrow_type):
        return pa.struct([(field.name, plain_arrow_type(field.type, where)) for field in arrow_type])
    raise TunelabError(f"{where} has Arrow type {arrow_type}, which tunelab cannot read as text, numbers or lists; "
                       "cast it (e.g. to string) or drop the column")


def read_arrow_table(table, name: str) -> Iterator[RawRecord]:
    import pyarrow as pa

    schema = pa.schema([(field.name, plain_arrow_type(field.type, f"{name}: column {field.name!r}"))
                        for field in table.schema])
    return read_table_records(table.cast(schema).to_pylist(), name)


def read_parquet(path: Path) -> Iterator[RawRecord]:
    import pyarrow.parquet as pq

    return read_arrow_table(pq.read_table(path), str(path))


def read_hf_dataset_dir(path: Path) -> Iterator[RawRecord]:
    import datasets
    import pyarrow as pa

    loaded = datasets.load_from_disk(str(path))
    # A DatasetDict's splits are pooled: prepare makes its own split.
    parts = loaded.values() if isinstance(loaded, datasets.DatasetDict) else [loaded]
    return read_arrow_table(pa.concat_tables([part.with_format("arrow")[:] for part in parts]), str(path))


def read_squad_json(path: Path) -> Iterator[RawRecord]:
    """SQuAD v1.1's nested JSON (data → paragraphs → qas), one record per question: id, title (the
    article, which keeps a context in one split), context, question and its gold answers' texts."""
    try:
        articles = json.loads(read_text(path))["data"]
    except (json.JSONDecodeError, KeyError, TypeError) as error:
        raise TunelabError(f"{path}: not SQuAD JSON (a 'data' list of articles): {error}") from None
    for a, article in enumerate(articles):
        for p, paragraph in enumerate(article.get("paragraphs", [])):
            for q, question in enumerate(paragraph.get("qas", [])):
                where = f"{path}: data[{a}].paragraphs[{p}].qas[{q}]"
                answers = [answer.get("text") for answer in question.get("answers", [])]
                if not answers or not all(isinstance(text, str) and text.strip() for text in answers):
                    raise TunelabError(f"{where}: a question needs gold answers with text")
                yield RawRecord({"id": question.get("id"), "title": article.get("title"), "context": paragraph.get("context"),
                                 "question": question.get("question"), "answers": answers}, where)


@dataclass(frozen=True)
class Reader:
    name: str
    read: Callable[[Path], Iterator[RawRecord]]


READERS: Registry[Reader] = Registry("data.format")
READERS.register(Reader("vader_tsv", read_vader_tsv))
READERS.register(Reader("jsonl", read_jsonl_records))
READERS.register(Reader("json", read_json_records))
READERS.register(Reader("csv", read_csv_records))
READERS.register(Reader("parquet", read_parquet))
READERS.register(Reader("hf_dataset_dir", read_hf_dataset_dir))
READERS.register(Reader("squad_json", read_squad_json))


def read_records(raw_dir: Path, file_name: str, raw_format: str) -> list[RawRecord]:
    """All records of the raw file ``file_name`` (named in data/raw/source.json)."""
    path = raw_dir / file_name
    if not path.exists():
        raise TunelabError(f"{path}: not found; run the fetch stage first")
    return list(READERS[raw_format].read(path))
