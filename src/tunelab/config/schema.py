"""Typed, frozen configuration: one dataclass per section of params.yaml.

conf/ (Hydra) mirrors these classes; DVC composes conf/ into params.yaml; each stage loads the
sections it reads with :func:`tunelab.config.load.load_section`. OmegaConf rejects unknown
keys and wrong types (naming the key); ``__post_init__`` checks choices and the fields a
choice requires.
"""

from dataclasses import dataclass, field
from typing import Optional

from tunelab.errors import TunelabError


def require_choice(key: str, value: str, choices: tuple[str, ...]) -> None:
    if value not in choices:
        raise TunelabError(f"{key}: unknown value {value!r}; expected one of {list(choices)}")


def require_set(key: str, value: object, because: str) -> None:
    if value in (None, "", []):
        raise TunelabError(f"{key}: must be set {because}")


MODEL_SOURCES = ("package_gguf", "local_dir", "hub")


@dataclass(frozen=True)
class ModelConfig:
    """Where the base model comes from; the ``base`` stage turns it into a plain HF folder."""

    name: str
    """Short name for run names and reports."""
    source: str
    """One of package_gguf (a GGUF shipped in a Python package), local_dir, hub."""
    package: Optional[str] = None
    """package_gguf: the importable package that ships the GGUF file (it is not imported)."""
    gguf_file: Optional[str] = None
    """package_gguf: the GGUF file name inside the package (or inside ``path``)."""
    path: Optional[str] = None
    """local_dir: an HF model folder (config.json, weights, tokenizer)."""
    hub_id: Optional[str] = None
    """hub: a model id on a reachable hub; fails clearly with HF_HUB_OFFLINE=1."""
    revision: Optional[str] = None
    """hub: a commit, tag or branch to pin."""

    def __post_init__(self):
        require_choice("model.source", self.source, MODEL_SOURCES)
        needs = {"package_gguf": ("package", "gguf_file"), "local_dir": ("path",), "hub": ("hub_id",)}
        for name in needs[self.source]:
            require_set(f"model.{name}", getattr(self, name), f"when model.source={self.source}")


DATA_SOURCES = ("pip_sdist", "local_file", "hf_dataset_dir")
RAW_FORMATS = ("vader_tsv", "jsonl", "csv", "parquet", "hf_dataset_dir")


@dataclass(frozen=True)
class SourceConfig:
    """What the ``fetch`` stage copies into data/raw: bytes in, checksum checked."""

    kind: str
    """One of pip_sdist (a package's source distribution, via pip), local_file, hf_dataset_dir."""
    package: Optional[str] = None
    """pip_sdist: the distribution name on the package index."""
    version: Optional[str] = None
    """pip_sdist: the exact version."""
    sha256: Optional[str] = None
    """sha256 of the downloaded sdist or the local file; required for pip_sdist."""
    members: list[str] = field(default_factory=list)
    """pip_sdist: path of the wanted file inside the sdist; several entries walk nested archives."""
    path: Optional[str] = None
    """local_file / hf_dataset_dir: where the data is."""

    def __post_init__(self):
        require_choice("data.source.kind", self.kind, DATA_SOURCES)
        if self.kind == "pip_sdist":
            for name in ("package", "version", "sha256", "members"):
                require_set(f"data.source.{name}", getattr(self, name), "when data.source.kind=pip_sdist")
        else:
            require_set("data.source.path", self.path, f"when data.source.kind={self.kind}")


@dataclass(frozen=True)
class DataConfig:
    """How raw records become labelled, deduplicated, split examples (``prepare`` stage)."""

    source: SourceConfig
    """Where the raw data comes from (read by ``fetch`` only)."""
    format: str
    """Raw file format: vader_tsv (id, rating, text), jsonl, csv, parquet, hf_dataset_dir."""
    labels: list[str]
    """Label names in order; with rating_field, [negative, positive]."""
    text_field: str = "text"
    """Field holding the input text."""
    label_field: Optional[str] = None
    """Field holding a label name from ``labels``. Set this or rating_field."""
    rating_field: Optional[str] = None
    """Field holding a signed score; label = its sign. Set this or label_field."""
    id_field: Optional[str] = None
    """Field holding a stable id; when unset, the id is a hash of the normalised text."""
    rating_margin: float = 0.5
    """With rating_field: drop items with |rating| below this (too close to neutral)."""
    test_size: int = 500
    """Examples in the frozen test split, stratified by label."""
    val_size: int = 200
    """Examples in the validation split."""
    train_size: Optional[int] = 2000
    """Examples in the train split; null takes all that remain."""
    seed: int = 42
    """Seed of the split."""

    def __post_init__(self):
        require_choice("data.format", self.format, RAW_FORMATS)
        if (self.label_field is None) == (self.rating_field is None):
            raise TunelabError("data: set exactly one of data.label_field and data.rating_field")
        if self.rating_field is not None and len(self.labels) != 2:
            raise TunelabError("data.labels: rating_field labels by sign, so give two labels: [negative, positive]")
        if len(set(self.labels)) != len(self.labels) or not self.labels:
            raise TunelabError(f"data.labels: must be distinct and non-empty, got {self.labels}")
        for name in ("test_size", "val_size"):
            if getattr(self, name) < 1:
                raise TunelabError(f"data.{name}: must be at least 1")


@dataclass(frozen=True)
class PromptConfig:
    """A promptsource-style template: Jinja with ``|||`` between prompt and target."""

    name: str
    """Template name, used in reports."""
    template: str
    """Jinja source; ``{{ text }}`` etc. are the example's fields; ``|||`` splits prompt from target."""
    answer_choices: Optional[str] = None
    """Jinja source of the choices, separated by ``|||`` (e.g. "negative ||| positive"), in label order."""
    system: Optional[str] = None
    """Optional system message (role prompting); null keeps the chat template's default."""
    use_chat_template: bool = True
    """Render the prompt through the base model's chat template as a user turn."""


@dataclass(frozen=True)
class FormatConfig:
    """Tokenisation settings shared by ``format`` (report) and ``train``."""

    max_length: int = 256
    """Longest prompt+completion in tokens; longer examples are truncated (and reported)."""

    def __post_init__(self):
        if self.max_length < 8:
            raise TunelabError(f"format.max_length: {self.max_length} is too small")


@dataclass(frozen=True)
class TrackingConfig:
    """Where MLflow records runs. MLFLOW_TRACKING_URI, when set, wins over ``uri``."""

    uri: str = "sqlite:///mlflow.db"
    """Tracking URI; the default is a git-ignored sqlite file in the repo root."""
    experiment: str = "tunelab"
    """MLflow experiment that holds the pipeline runs."""
    enabled: bool = True
    """Turn MLflow logging off (stages still write their DVC outputs)."""
