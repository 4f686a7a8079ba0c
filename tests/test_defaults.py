"""Every configuration value has one home: conf/ or the dataclass default, never both.

A dataclass default that every composition of conf/ overrides is never used by the pipeline
(tests that built configs from it ran settings no one runs); a conf/ value equal to its
default says the same thing twice, and the two drift apart. Checked over the default
composition and every group option (strategy=qat, data=local_file, ...).
"""

import dataclasses
import typing

from test_config import CONF, REQUIRED_OVERRIDES, group_options

from tunelab.config.compose import compose_conf
from tunelab.config.schema import SECTIONS


def compositions() -> list[dict]:
    return [compose_conf(CONF)] + [compose_conf(CONF, [option, *REQUIRED_OVERRIDES.get(option, [])])
                                   for option in group_options()]


def nested(annotation) -> tuple[str, type] | None:
    """('one', Sub) for a field typed Sub / Optional[Sub]; ('each', Sub) for dict[str, Sub]."""
    if typing.get_origin(annotation) is dict:
        value = typing.get_args(annotation)[1]
        return ("each", value) if dataclasses.is_dataclass(value) else None
    sub = next((c for c in typing.get_args(annotation) or (annotation,) if dataclasses.is_dataclass(c)), None)
    return ("one", sub) if sub else None


def default_of(field: dataclasses.Field):
    if field.default is not dataclasses.MISSING:
        return field.default
    if field.default_factory is not dataclasses.MISSING:
        return field.default_factory()
    return dataclasses.MISSING


def settings(cls: type, raw: dict, key: str, found: dict) -> None:
    """found[(class, field)] = [(key, value) for each place conf sets it]."""
    hints = typing.get_type_hints(cls)
    for field in dataclasses.fields(cls):
        if field.name not in raw:
            continue
        value, where = raw[field.name], f"{key}.{field.name}"
        found.setdefault((cls, field.name), []).append((where, value))
        kind = nested(hints[field.name])
        if kind and kind[0] == "one" and isinstance(value, dict):
            settings(kind[1], value, where, found)
        elif kind and kind[0] == "each" and isinstance(value, dict):
            for name, item in value.items():
                settings(kind[1], item, f"{where}.{name}", found)


def test_no_value_lives_both_in_conf_and_in_a_dataclass_default():
    found: dict = {}
    for composed in compositions():
        for name, cls in SECTIONS.items():
            settings(cls, composed[name], name, found)
    restated = []
    for (cls, name), places in found.items():
        field = next(f for f in dataclasses.fields(cls) if f.name == name)
        default = default_of(field)
        if default is dataclasses.MISSING:
            continue
        # null is "unset", shown in conf/ to document the option, not a value that can drift
        restated += [f"{key}={value!r} ({cls.__name__}.{name} defaults to it)" for key, value in places
                     if value == default and value is not None]
    assert restated == [], "conf/ restates dataclass defaults; keep one: " + "; ".join(sorted(set(restated)))


def test_no_dataclass_default_is_overridden_by_every_composition():
    """A default that conf/ sets wherever its class appears is never what the pipeline runs
    (null defaults excepted: "unset", which conf/ files show to document the option)."""
    found: dict = {}
    appearances: dict = {}
    for composed in compositions():
        for name, cls in SECTIONS.items():
            count_appearances(cls, composed[name], appearances)
            settings(cls, composed[name], name, found)
    dead = []
    for cls, count in appearances.items():
        for field in dataclasses.fields(cls):
            default = default_of(field)
            if default not in (dataclasses.MISSING, None) and len(found.get((cls, field.name), [])) == count:
                dead.append(f"{cls.__name__}.{field.name}")
    assert dead == [], f"these defaults are overridden wherever conf/ uses their class; drop the default: {sorted(dead)}"


def count_appearances(cls: type, raw: dict, appearances: dict) -> None:
    appearances[cls] = appearances.get(cls, 0) + 1
    hints = typing.get_type_hints(cls)
    for field in dataclasses.fields(cls):
        kind, value = nested(hints[field.name]), raw.get(field.name)
        if kind and kind[0] == "one" and isinstance(value, dict):
            count_appearances(kind[1], value, appearances)
        elif kind and kind[0] == "each" and isinstance(value, dict):
            for item in value.values():
                count_appearances(kind[1], item, appearances)
