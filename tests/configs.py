"""Config sections as the pipeline composes them from conf/, with a test's changes on top.

conf/ is where the values live (tests/test_defaults.py): a test starts from what the pipeline
runs and states only what it changes.
"""

import copy
from functools import lru_cache

from conftest import REPO_ROOT

from tunelab.config.compose import compose_conf
from tunelab.config.load import to_section
from tunelab.config.schema import SECTIONS


@lru_cache(maxsize=None)
def composed(overrides: tuple[str, ...] = ()) -> dict:
    return compose_conf(REPO_ROOT / "conf", list(overrides))


def conf_section(name: str, overrides: tuple[str, ...] = (), **changes):
    """Section ``name`` of conf/ composed with Hydra ``overrides``, then ``changes`` set on it."""
    raw = {**copy.deepcopy(composed(tuple(overrides))[name]), **changes}
    return to_section(SECTIONS[name], name, raw)
