"""Typed readers of the JSON files one stage writes and another reads (paths: tunelab.paths).

Each record names the fields its readers rely on; extra fields in the file are kept out of the
type (they are for people and MLflow). A missing file names the stage that writes it.
"""

import dataclasses
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Optional, TypeVar

from tunelab.errors import TunelabError
from tunelab.paths import PATHS, TRAINED, Paths

if TYPE_CHECKING:
    from tunelab.config.schema import DataConfig

Record = TypeVar("Record")


def read_record(cls: type[Record], path: Path, producer: str) -> Record:
    if not path.is_file():
        raise TunelabError(f"{path}: not found; run the {producer} stage first")
    try:
        data = json.loads(path.read_text())
        return cls.from_json(data) if hasattr(cls, "from_json") else _known_fields(cls, data)
    except (ValueError, TypeError, KeyError) as error:
        raise TunelabError(f"{path}: not a {producer} stage record ({type(error).__name__}: {error}); "
                           f"rerun the {producer} stage") from None


def read_optional(cls: type[Record], path: Path, producer: str) -> Optional[Record]:
    """The record, or None where its stage did not run (the report works with what exists)."""
    return read_record(cls, path, producer) if path.is_file() else None


def _known_fields(cls: type[Record], data: dict) -> Record:
    names = {f.name for f in dataclasses.fields(cls)}
    return cls(**{key: value for key, value in data.items() if key in names})


@dataclass(frozen=True)
class PreparedStats:
    """data/prepared/stats.json (stage prepare), the fields later stages read."""

    label_names: list[str] = field(default_factory=list)
    """classification: data.labels, or the names prepare found where it is ``auto``."""


def prepared_data(data: "DataConfig", paths: Paths = PATHS) -> "DataConfig":
    """The data config as the stages after prepare use it: with ``labels: auto``, the label names
    prepare found (sorted) in place of ``auto``."""
    if not data.infers_labels:
        return data
    return dataclasses.replace(data, labels=read_record(PreparedStats, paths.prepared_stats, "prepare").label_names)


@dataclass(frozen=True)
class BaseRecord:
    """metrics/base.json (stage base)."""

    model: str
    parameters: int
    saved_megabytes: float


@dataclass(frozen=True)
class TrainRecord:
    """metrics/train.json (stage train), the fields later stages read."""

    strategy: str
    train_seconds: float
    steps: int


@dataclass(frozen=True)
class PromptSearchRecord:
    """metrics/prompt_search.json (stage search_prompt): every candidate's val score, and the winner."""

    skipped: Optional[str] = None
    """Why nothing was searched (no optimized method in eval.prompting)."""
    metric: Optional[str] = None
    rows: Optional[int] = None
    """Val rows each candidate was scored on."""
    candidates: list[dict] = field(default_factory=list)
    """name, template, shots, selection, calibrate, score, ci95, examples; in grid order."""
    winner: Optional[dict] = None
    """The candidate evaluate@base scores on test as ``optimized``."""


@dataclass(frozen=True)
class VariantOutcome:
    """One deployment method's outcome in the quantize stage."""

    status: str  # made or skipped
    reason: Optional[str] = None  # skipped: why the method does not apply here
    seconds: Optional[float] = None  # made: how long making it took
    size_mb: Optional[float] = None  # made: its folder's size


@dataclass(frozen=True)
class QuantizeRecord:
    """metrics/quantize.json (stage quantize): each variant made or skipped, with why."""

    strategy: str
    variants: dict[str, VariantOutcome] = field(default_factory=dict)
    source: str = TRAINED
    """The model the variants were made from: trained, or aligned where the align stage ran."""

    @classmethod
    def from_json(cls, data: dict) -> "QuantizeRecord":
        return cls(data["strategy"], {name: _known_fields(VariantOutcome, entry) for name, entry in data["variants"].items()},
                   data.get("source", TRAINED))  # records from before alignment existed: the trained model's

    def to_json(self) -> dict:
        return {"strategy": self.strategy, "source": self.source, "variants": {
            name: {k: v for k, v in dataclasses.asdict(outcome).items() if v is not None}
            for name, outcome in self.variants.items()}}

    def made(self) -> list[str]:
        return [name for name, outcome in self.variants.items() if outcome.status == "made"]

    def skipped_reason(self, name: str) -> Optional[str]:
        outcome = self.variants.get(name)
        return outcome.reason if outcome is not None and outcome.status == "skipped" else None


@dataclass(frozen=True)
class BenchRecord:
    """metrics/bench.json (stage benchmark): cost only, per variant."""

    environment: dict
    settings: dict
    variants: dict[str, dict]


@dataclass(frozen=True)
class ServeRecord:
    """metrics/serve.json (stage load_test): the served variant under load, or why it was not measured."""

    skipped: Optional[str] = None
    variant: Optional[str] = None
    engine: Optional[str] = None
    settings: dict = field(default_factory=dict)
    workloads: dict[str, list[dict]] = field(default_factory=dict)
    """workload (task, decode) -> one result per concurrency level (tunelab.serving.load_test.LevelResult)."""
    batching_gain: dict[str, Optional[float]] = field(default_factory=dict)
    """workload -> tokens/s at the highest concurrency over the lowest."""


@dataclass(frozen=True)
class AlignRecord:
    """metrics/align.json (stage align): the alignment phase on the SFT model, or why it did not run."""

    method: str
    skipped: Optional[str] = None
    train_seconds: Optional[float] = None
    """Seconds of the alignment phase alone (the SFT model's own are metrics/train.json's)."""
    steps: Optional[int] = None
