"""``prepare``, part one: raw records → clean, deduplicated examples with stable ids.

Classification examples are a normalised text and a label; generative examples are a prompt
(a layout's last user turn, with the turns before it as ``history``; or the row's own fields,
which the prompt template renders) and ``references``, the acceptable answers.
"""

import hashlib
import json
import math
import re
import unicodedata
from collections import Counter
from dataclasses import dataclass, field

from tunelab.config.schema import DataConfig
from tunelab.data.layouts import read_example, references_of
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


NOT_INPUT = ("id", "label", "rating", "references")
"""Fields that answer or name an example rather than ask it."""


def input_key(example: dict) -> str:
    """What makes two examples the same question, whatever the task: their input fields (a
    classification text; a generative prompt, its history or own fields), normalised and
    case-folded. Deduplication and the leakage check compare it."""
    inputs = {name: value for name, value in example.items() if name not in NOT_INPUT}
    return dedupe_key(json.dumps(inputs, ensure_ascii=False, sort_keys=True))


@dataclass
class CleaningReport:
    raw_rows: int = 0
    dropped: Counter = field(default_factory=Counter)
    """Rows dropped, by reason: empty_text, near_neutral, duplicate_text (classification), duplicate_prompt."""


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


def inferred_labels(records: list[RawRecord], config: DataConfig) -> list[str]:
    """labels: auto: the label column's distinct values, sorted; refused above data.max_labels (a
    text or id column named by mistake) or below two (nothing to tell apart)."""
    found = sorted({str(_field(record, config.label_field)) for record in records})
    if len(found) > config.max_labels:
        raise TunelabError(f"data.labels: auto found {len(found)} distinct values in field {config.label_field!r}, "
                           f"more than data.max_labels ({config.max_labels}): is it the label column? Name the "
                           "labels (-S 'data.labels=[a,b,c]') or raise data.max_labels")
    if len(found) < 2:
        raise TunelabError(f"data.labels: auto found {found} in field {config.label_field!r}; a classifier needs at "
                           "least two labels")
    return found


def clean(records: list[RawRecord], config: DataConfig) -> tuple[list[dict], CleaningReport]:
    """The task's examples: labelled texts (classification) or prompts with references."""
    return clean_labelled(records, config) if config.classifies else clean_generative(records, config)


def example_id(record: RawRecord, config: DataConfig, fallback: str, seen: dict[str, str]) -> str:
    """The row's id (``data.id_field``, else ``fallback``), refused if another row has it."""
    identifier = str(_field(record, config.id_field)) if config.id_field else fallback
    if identifier in seen:
        raise TunelabError(f"{record.where}: id {identifier!r} already used at {seen[identifier]}")
    seen[identifier] = record.where
    return identifier


def generative_example(record: RawRecord, config: DataConfig) -> dict:
    """A prompt and its references: a layout's chat split into the turns before the last user turn
    (``history``), that turn (``prompt``) and the references of the answer to it; or the row's own
    fields (for the template) with the references from ``data.references_field``. Texts are kept
    as written: a newline in a prompt or an answer can matter."""
    if config.layout is not None:
        messages, references = read_example(record.fields, config.layout, config.fields, record.where, config.roles)
        last_question = max(i for i, turn in enumerate(messages) if turn["role"] == "user")
        tool_turns = messages[last_question + 1:-1]  # the tool calls and results before the answer
        return {"history": messages[:last_question], "prompt": messages[last_question]["content"],
                **({"tool_turns": tool_turns} if tool_turns else {}), "references": references}
    answers = references_of(_field(record, config.references_field), config.references_field, record.where)
    own = {name: value for name, value in record.fields.items() if name not in (config.references_field, "id")}
    return {**own, "references": answers}


def clean_generative(records: list[RawRecord], config: DataConfig) -> tuple[list[dict], CleaningReport]:
    """Read every row's prompt and references, dedupe on the prompt (history and fields included)."""
    report = CleaningReport(raw_rows=len(records))
    examples, seen_keys, seen_ids = [], set(), {}
    for record in records:
        example = generative_example(record, config)
        key = input_key(example)
        if key in seen_keys:
            report.dropped["duplicate_prompt"] += 1
            continue
        seen_keys.add(key)
        fallback = hashlib.sha1(key.encode("utf-8")).hexdigest()[:16]
        examples.append({"id": example_id(record, config, fallback, seen_ids), **example})
    return examples, report


def clean_labelled(records: list[RawRecord], config: DataConfig) -> tuple[list[dict], CleaningReport]:
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
        example = {"id": example_id(record, config, text_id(text), seen_ids), "text": text, "label": label}
        if config.rating_field:
            example["rating"] = float(record.fields[config.rating_field])
        examples.append(example)
    return examples, report
