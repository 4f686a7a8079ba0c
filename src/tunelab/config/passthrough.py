"""Options passed as they are to a library's own config dataclass (transformers' TrainingArguments,
a TRL config, a peft config), checked against that dataclass's fields.

The schema does not copy those classes' hundreds of fields: it keeps a dict per section
(``train.extra_args``, ``strategy.lora.peft``, ...) and this module refuses a name the library does
not have, with the nearest one it does, or a name tunelab already sets from its own key.
"""

import dataclasses
import difflib
from collections.abc import Iterable

from tunelab.errors import TunelabError


def check_passthrough(key: str, given: dict, library_class: type, managed: Iterable[str] = (),
                      instead: str = "") -> None:
    """Every name in ``given`` is an init field of ``library_class`` that tunelab does not set itself."""
    fields = {f.name for f in dataclasses.fields(library_class) if f.init}
    where = f"{library_class.__module__.split('.')[0]}'s {library_class.__name__}"
    for name in given:
        if name in managed:
            raise TunelabError(f"config key {key}.{name}: tunelab sets {name} itself{instead}; set that key, "
                               f"not {key}.{name}")
        if name not in fields:
            near = difflib.get_close_matches(name, sorted(fields), n=1)
            hint = f"; did you mean {near[0]}?" if near else ""
            raise TunelabError(f"config key {key}.{name}: not a field of {where}{hint}")
