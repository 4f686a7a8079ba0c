"""Hydra sweep syntax → the list of runs, each checked against conf/ and the schema before any runs.

``strategy=lora,ia3 train.learning_rate=1e-4,3e-4`` is four runs; ``choice()`` and ``range()``
sweep too, as in ``python app.py -m``. Expansion is Hydra's own (its basic sweeper), so the
syntax is exactly what Hydra users type.
"""

import itertools
from pathlib import Path

from tunelab.config.compose import CONF_DIR, compose_conf
from tunelab.errors import TunelabError
from tunelab.validation import validate_config


def expand(overrides: list[str]) -> list[list[str]]:
    """Every combination of the sweep, as lists of ``key=value`` overrides, in Hydra's order.

    Parsed by Hydra's public override parser; the product is what Hydra's basic sweeper makes of
    it (its split_arguments lives in hydra._internal, which is not an interface)."""
    from hydra.core.override_parser.overrides_parser import OverridesParser
    from hydra.errors import HydraException

    try:
        parsed = OverridesParser.create().parse_overrides(overrides)
    except HydraException as error:
        raise TunelabError(f"sweep: {error}") from None
    # by key, as Hydra's sweeper does: a key given twice takes its last value, in its first place
    choices = {override.get_key_element(): sweep_choices(override) for override in parsed}
    return [list(run) for run in itertools.product(*choices.values())]


def sweep_choices(override) -> list[str]:
    """The ``key=value`` overrides one command-line override stands for: one, or one per swept value."""
    key = override.get_key_element()
    if not override.is_sweep_override():
        return [f"{key}={override.get_value_element_as_str()}"]
    if not override.is_discrete_sweep():  # interval(...): a search space, which a grid cannot enumerate
        raise TunelabError(f"sweep: {key}: a grid sweeps lists, choice() and range(), not {override.value_type.name}")
    return [f"{key}={value}" for value in override.sweep_string_iterator()]


def _first_lines(message: str) -> str:
    """Hydra's message without its config search path listing."""
    return message.split("\nConfig search path")[0].strip()


def check_runs(runs: list[list[str]], conf_dir: Path = CONF_DIR) -> None:
    """Compose and validate every run; the first bad key or value stops the sweep, named."""
    for run in runs:
        try:
            validate_config(compose_conf(conf_dir, run))
        except TunelabError as error:
            raise TunelabError(f"sweep run {' '.join(run)}: {_first_lines(str(error))}") from None
