"""The whole configuration checked before any stage works: every section's types and ranges,
and every name a registry must know (raw data format, strategy, deployment methods). The check stage runs it.

Kept out of tunelab.config, which every stage imports: a stage depends on the registries it
uses, not on all of them.
"""

from typing import Any

from tunelab.config.load import check_known_sections, to_section
from tunelab.config.schema import SECTIONS
from tunelab.data.readers import READERS
from tunelab.deploy.methods import METHODS
from tunelab.training.strategies import check_strategy_config


def validate_config(params: dict[str, Any]) -> None:
    check_known_sections(params)
    sections = {name: to_section(cls, name, params.get(name)) for name, cls in SECTIONS.items()}
    READERS[sections["data"].format]  # an unknown name is refused here, listing the registered ones
    check_strategy_config(sections["strategy"])
    for name in sections["quantize"].variants:
        METHODS[name]  # an unknown name is refused here, listing the registered ones
