"""The checks every section's ``__post_init__`` uses: a choice, a required key, a range, a pinned commit."""

import re
from typing import Optional

from tunelab.errors import TunelabError


def require_choice(key: str, value: str, choices: tuple[str, ...]) -> None:
    if value not in choices:
        raise TunelabError(f"{key}: unknown value {value!r}; expected one of {list(choices)}")


def require_set(key: str, value: object, because: str) -> None:
    if value is None or value in ("", [], {}):
        raise TunelabError(f"{key}: must be set {because}")


def require_range(key: str, value: float | None, low: float | None = None, high: float | None = None,
                  low_open: bool = False, high_open: bool = False) -> None:
    """``value`` within [low, high] (or the open side's strict bound); None passes (unset)."""
    if value is None:
        return
    too_low = low is not None and (value <= low if low_open else value < low)
    too_high = high is not None and (value >= high if high_open else value > high)
    if too_low or too_high:
        left = "(" if low_open else "["
        right = ")" if high_open else "]"
        bounds = f"{left}{'-inf' if low is None else low}, {'inf' if high is None else high}{right}"
        raise TunelabError(f"{key}: {value} is out of range; expected a value in {bounds}")


COMMIT = re.compile(r"^[0-9a-f]{40}$")


def require_commit(key: str, value: Optional[str]) -> None:
    """A hub revision pinned to a commit: a branch (main) or tag can move under the same config."""
    if value is None or not COMMIT.match(str(value)):
        raise TunelabError(f"{key}: {value!r} is not a commit sha (40 hex digits); a branch or tag can move, "
                           "so the run would not be reproducible. Find the commit on the hub page's history")
