"""What every stage script shares: one entry point that turns user errors into one line."""

import sys
from collections.abc import Callable

from tunelab.errors import TunelabError

USER_ERROR_EXIT_CODE = 2


def run_stage(main: Callable[[], None]) -> None:
    """Run a stage's ``main``; a :class:`TunelabError` becomes one line on stderr and exit 2."""
    try:
        main()
    except TunelabError as error:
        print(f"error: {error}", file=sys.stderr)
        sys.exit(USER_ERROR_EXIT_CODE)
