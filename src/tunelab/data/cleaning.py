"""``prepare``, part one: raw records → clean, labelled, deduplicated examples with stable ids."""

import hashlib
import math
import re
import unicodedata
from collections import Counter
from dataclasses import dataclass, field

from tunelab.config.schema import DataConfig
from tunelab.data.readers import RawRecord
from tunelab.errors import TunelabError

_WHITESPACE = re.compile(r"\s+")


def normalize_text(text: str) -> str:
    """NFKC (folds compatibility forms such as ligatures and full-width letters), one space."""
    return _WHITESPACE.sub(" ", unicodedata.normalize("NFKC", text)).strip()


def dedupe_key(text: str) -> str:
    return normalize_text(text).casefold()


def text_id(text: str) -> str:
    """A stable id for data without one: the same text gets the same id on every machine."""
    return hashlib.sha1(dedupe_key(text).encode("utf-8")).hexdigest()[:16]


@dataclass
class CleaningReport:
    raw_rows: int = 0
    dropped: Counter = field(default_factory=Counter)
    """Rows dropped, by reason: empty_text, near_neutral, duplicate_text."""


def _field(record: RawRecord, name: str):
    if name not in record.fields:
        raise TunelabError(f"{record.where}: missing field {name!r} (fields present: {sorted(record.fields)})")
    value = record.fields[name]
    if value is None:
        raise TunelabError(f"{record.where}: field {name!r} is empty (null); give every row a value")
    return value


def label_of(record: RawRecord, config: DataConfig) -> str | None:
    """The label name, or None when the rating is too close to neutral to trust."""
    if config.label_field is not None:
        label = str(_field(record, config.label_field))
        if label not in config.labels:
            raise TunelabError(f"{record.where}: label {label!r} is not one of data.labels {config.labels}")
        return label
    raw_rating = _field(record, config.rating_field)
    try:
        rating = float(raw_rating)
    except (TypeError, ValueError):
        raise TunelabError(f"{record.where}: {config.rating_field} {raw_rating!r} is not a number") from None
    if not math.isfinite(rating):
        raise TunelabError(f"{record.where}: {config.rating_field} is {rating}; a rating must be a finite number")
    if abs(rating) < config.rating_margin:
        return None
    negative, positive = config.labels
    return positive if rating > 0 else negative


def clean(records: list[RawRecord], config: DataConfig) -> tuple[list[dict], CleaningReport]:
    """Normalise, label, drop empty and near-neutral rows, dedupe on normalised text."""
    report = CleaningReport(raw_rows=len(records))
    examples, seen_texts, seen_ids = [], set(), {}
    for record in records:
        raw_text = _field(record, config.text_field)
        if not isinstance(raw_text, str):
            raise TunelabError(f"{record.where}: {config.text_field} must be text, got {type(raw_text).__name__}")
        text = normalize_text(raw_text)
        if not text:
            report.dropped["empty_text"] += 1
            continue
        label = label_of(record, config)
        if label is None:
            report.dropped["near_neutral"] += 1
            continue
        if dedupe_key(text) in seen_texts:
            report.dropped["duplicate_text"] += 1
            continue
        seen_texts.add(dedupe_key(text))
        example_id = str(_field(record, config.id_field)) if config.id_field else text_id(text)
        if example_id in seen_ids:
            raise TunelabError(f"{record.where}: id {example_id!r} already used at {seen_ids[example_id]}")
        seen_ids[example_id] = record.where
        example = {"id": example_id, "text": text, "label": label}
        if config.rating_field:
            example["rating"] = float(record.fields[config.rating_field])
        examples.append(example)
    return examples, report
