"""Hydra sweep syntax → the list of runs, each checked against conf/ and the schema before any runs.

``strategy=lora,ia3 train.learning_rate=1e-4,3e-4`` is four runs; ``choice()`` and ``range()``
sweep too, as in ``python app.py -m``. Expansion is Hydra's own (its basic sweeper), so the
syntax is exactly what Hydra users type.
"""

from pathlib import Path

from tunelab.config.compose import CONF_DIR, compose_conf
from tunelab.errors import TunelabError
from tunelab.validation import validate_config


def expand(overrides: list[str]) -> list[list[str]]:
    """Every combination of the sweep, as lists of ``key=value`` overrides, in Hydra's order."""
    from hydra._internal.core_plugins.basic_sweeper import BasicSweeper
    from hydra.core.override_parser.overrides_parser import OverridesParser
    from hydra.errors import HydraException

    try:
        parsed = OverridesParser.create().parse_overrides(overrides)
        return BasicSweeper.split_arguments(parsed, max_batch_size=None)[0]
    except HydraException as error:
        raise TunelabError(f"sweep: {error}") from None


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
