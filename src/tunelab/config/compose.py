"""conf/ (Hydra) → the composed configuration, and the guard against a stale params.yaml.

DVC composes conf/ into params.yaml only in ``dvc exp run``; a bare ``dvc repro`` reads
whatever params.yaml holds. So after an edit in conf/, ``dvc repro`` would silently run the
old configuration. Stages therefore check, when they run outside ``dvc exp run``, that
params.yaml is what conf/ composes to, and stop with the first differing key if not.
"""

import os
from pathlib import Path
from typing import Any

from tunelab.errors import TunelabError

CONF_DIR = Path("conf")
CONFIG_NAME = "config"
EXPERIMENT_ENV = "DVC_EXP_NAME"  # set by `dvc exp run` for the stages it runs


def compose_conf(conf_dir: Path = CONF_DIR, overrides: list[str] | None = None) -> dict[str, Any]:
    """Compose conf/ the way DVC does (hydra compose, then resolve) as plain data."""
    from hydra import compose, initialize_config_dir
    from hydra.errors import HydraException
    from omegaconf import OmegaConf

    try:
        with initialize_config_dir(str(conf_dir.resolve()), version_base=None):
            config = compose(config_name=CONFIG_NAME, overrides=overrides or [])
    except HydraException as error:
        raise TunelabError(f"conf/: {error}") from None
    except RecursionError:
        raise TunelabError("conf/: the defaults lists choose each other in a loop, e.g. a prompt file that chooses its "
                           "sibling templates (sentiment_instruction) chosen as a prompting method's template; choose "
                           "another template file, or none, to derive it from the training prompt") from None
    return OmegaConf.to_container(config, resolve=True)


def first_difference(expected: Any, actual: Any, path: str = "") -> str | None:
    """The first key path where two nested configs differ, or None if they are equal."""
    if isinstance(expected, dict) and isinstance(actual, dict):
        for key in sorted(set(expected) | set(actual), key=str):
            where = f"{path}.{key}" if path else str(key)
            if key not in expected or key not in actual:
                return where
            if (difference := first_difference(expected[key], actual[key], where)) is not None:
                return difference
        return None
    return None if expected == actual else (path or "<root>")


def check_params_current(params: dict[str, Any], conf_dir: Path = CONF_DIR) -> None:
    """Refuse a params.yaml that conf/ no longer composes to (outside ``dvc exp run``)."""
    if os.environ.get(EXPERIMENT_ENV) or not (conf_dir / f"{CONFIG_NAME}.yaml").is_file():
        return
    difference = first_difference(compose_conf(conf_dir), params)
    if difference is not None:
        raise TunelabError(
            f"params.yaml is not what conf/ composes to (first difference: {difference}). "
            "A bare `dvc repro` does not compose conf/; run `dvc exp run` (or `make run`) instead, "
            "with -S for any overrides"
        )
