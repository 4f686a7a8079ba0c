"""Load one section of params.yaml into its dataclass, before a stage does any work."""

from pathlib import Path
from typing import Any, TypeVar

from omegaconf import OmegaConf
from omegaconf.errors import OmegaConfBaseException

from tunelab.errors import TunelabError

PARAMS_FILE = Path("params.yaml")

Section = TypeVar("Section")


def read_params(path: str | Path = PARAMS_FILE) -> dict[str, Any]:
    """The composed configuration as plain data (for logging and hashing)."""
    path = Path(path)
    if not path.is_file():
        raise TunelabError(
            f"{path}: not found. It is composed from conf/ by `dvc exp run` (or `make run`); "
            "run the pipeline from the repository root"
        )
    try:
        params = OmegaConf.to_container(OmegaConf.load(path), resolve=True)
    except Exception as error:  # yaml errors carry their own line numbers
        raise TunelabError(f"{path}: not valid YAML: {error}") from None
    return params or {}


def to_section(cls: type[Section], name: str, raw: Any) -> Section:
    """Validate ``raw`` against ``cls``; errors name the full key, e.g. ``data.test_size``."""
    if raw is None:
        raise TunelabError(f"params: missing section {name!r}")
    try:
        merged = OmegaConf.merge(OmegaConf.structured(cls), OmegaConf.create(raw))
        return OmegaConf.to_object(merged)
    except OmegaConfBaseException as error:
        key = getattr(error, "full_key", None)
        message = str(error).splitlines()[0]
        where = f"{name}.{key}" if key else name
        raise TunelabError(f"params: {where}: {message}") from None


def load_section(cls: type[Section], name: str, path: str | Path = PARAMS_FILE) -> Section:
    """Read section ``name`` of params.yaml as a frozen ``cls`` instance."""
    return to_section(cls, name, read_params(path).get(name))
