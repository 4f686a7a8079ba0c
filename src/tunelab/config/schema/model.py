"""``model``: the base model and where it comes from."""

from dataclasses import dataclass
from typing import Optional

from tunelab.config.schema.checks import require_choice, require_commit, require_set

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
    """hub: the commit (its 40-hex sha) to download; required, since a branch or tag can move and a
    rerun would then train another model under the same config."""
    sha256: Optional[str] = None
    """package_gguf or a local GGUF: the file's sha256; the check stage refuses any other bytes (an
    edited site-packages, another build of the package)."""
    chat_template: Optional[str] = None
    """A chat template for a model that has none (a base model) or to replace its own: a shipped name
    (tunelab.models.chat_templates: chatml, ...) or a Jinja file's path. The base stage saves it
    beside the model, so every variant after it carries it. null: the model's own."""

    def __post_init__(self):
        require_choice("model.source", self.source, MODEL_SOURCES)
        needs = {"package_gguf": ("package", "gguf_file"), "local_dir": ("path",), "hub": ("hub_id",)}
        for name in needs[self.source]:
            require_set(f"model.{name}", getattr(self, name), f"when model.source={self.source}")
        if self.source == "hub":
            require_commit("model.revision", self.revision)
