"""Load one section of params.yaml into its dataclass, before a stage does any work."""

import dataclasses
import typing
from pathlib import Path
from typing import Any, TypeVar

from omegaconf import DictConfig, OmegaConf
from omegaconf.errors import OmegaConfBaseException

from tunelab.config.compose import CONF_DIR, check_params_current
from tunelab.errors import TunelabError

PARAMS_FILE = Path("params.yaml")

Section = TypeVar("Section")


def read_params(path: str | Path = PARAMS_FILE, check_current: bool = True) -> dict[str, Any]:
    """The composed configuration as plain data, refused if conf/ has changed since.

    See :func:`tunelab.config.compose.check_params_current` for why.
    """
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
    check_known_sections(params or {}, path)
    if check_current:
        check_params_current(params or {}, path.parent / CONF_DIR)
    return params or {}


def check_known_sections(params: dict[str, Any], where: str | Path = "config") -> None:
    """Refuse a top-level section no stage reads: a typo there would silently configure nothing."""
    from tunelab.config.schema import SECTIONS

    if unknown := sorted(set(params) - set(SECTIONS)):
        raise TunelabError(f"{where}: unknown section {unknown[0]!r}; the sections are {sorted(SECTIONS)}")


def check_renamed_keys(name: str, raw: Any) -> None:
    from tunelab.config.schema import RENAMED

    for key in raw if isinstance(raw, dict) else ():
        if (old := f"{name}.{key}") in RENAMED:
            raise TunelabError(f"config key {old}: renamed to {RENAMED[old]}; rename it in conf/ (or in your -S "
                               "override): prompting methods are not fine-tuning strategies")


def _dataclass_type(annotation) -> type | None:
    """``Sub`` for a field typed ``Sub`` or ``Optional[Sub]`` where Sub is a dataclass."""
    if typing.get_origin(annotation) is dict:
        return None
    candidates = typing.get_args(annotation) or (annotation,)
    return next((c for c in candidates if dataclasses.is_dataclass(c)), None)


def _dict_value_dataclass(annotation) -> type | None:
    """``Sub`` for a field typed ``dict[str, Sub]`` where Sub is a dataclass."""
    if typing.get_origin(annotation) is not dict:
        return None
    value_type = typing.get_args(annotation)[1]
    return value_type if dataclasses.is_dataclass(value_type) else None


def _writable_schema(cls: type, raw: Any) -> DictConfig:
    """OmegaConf's schema of ``cls``, writable down to the nested dataclasses ``raw`` fills.

    OmegaConf marks the nodes of frozen dataclasses read-only, which refuses the merge itself;
    the objects that ``to_object`` builds from the merged schema are frozen all the same.
    """
    schema = OmegaConf.structured(cls)
    OmegaConf.set_readonly(schema, False)
    for field in dataclasses.fields(cls):
        nested = _dataclass_type(field.type)
        value = raw.get(field.name) if isinstance(raw, dict) else None
        if nested is not None and isinstance(value, dict):
            schema[field.name] = _writable_schema(nested, value)
        values = _dict_value_dataclass(field.type)
        if values is not None and isinstance(value, dict):
            schema[field.name] = {key: _writable_schema(values, item) if isinstance(item, dict) else item
                                  for key, item in value.items()}
    return schema


def to_section(cls: type[Section], name: str, raw: Any) -> Section:
    """Validate ``raw`` against ``cls``; errors name the full key, e.g. ``data.test_size``."""
    if raw is None:
        raise TunelabError(f"config: missing section {name!r} (is it in conf/config.yaml's defaults?)")
    check_renamed_keys(name, raw)
    try:
        merged = OmegaConf.merge(_writable_schema(cls, raw), OmegaConf.create(raw))
        return OmegaConf.to_object(merged)
    except OmegaConfBaseException as error:
        key = getattr(error, "full_key", None)
        message = str(error).splitlines()[0]
        where = f"{name}.{key}" if key else name
        raise TunelabError(f"config key {where}: {message}") from None
    except TunelabError as error:  # raised by a dataclass's own checks
        raise TunelabError(f"config key {error}") from None


def read_extra_test_sets(params: dict[str, Any]) -> dict:
    """eval.extra_test_sets alone, by name (what fetch, check and prepare read of eval)."""
    from tunelab.config.schema import ExtraTestSetConfig

    raw = (params.get("eval") or {}).get("extra_test_sets") or {}
    sets = {name: to_section(ExtraTestSetConfig, f"eval.extra_test_sets.{name}", item) for name, item in raw.items()}
    for name, extra in sets.items():
        extra.check(f"eval.extra_test_sets.{name}")
    return sets
