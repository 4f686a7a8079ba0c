"""What every stage script shares: one entry point that turns user errors into one line."""

import signal
import sys
from collections.abc import Callable

from tunelab.errors import TunelabError

USER_ERROR_EXIT_CODE = 2


def _exit_on_sigterm(signum, frame) -> None:
    # SystemExit unwinds like an error: open MLflow runs end FAILED, atomic outputs are discarded.
    raise SystemExit(128 + signum)


def run_stage(main: Callable[[], None]) -> None:
    """Run a stage's ``main``; a :class:`TunelabError` becomes one line on stderr and exit 2.

    SIGTERM (``dvc queue kill``, a scheduler's timeout) unwinds the stage as SIGINT does.
    """
    signal.signal(signal.SIGTERM, _exit_on_sigterm)
    try:
        main()
    except TunelabError as error:
        print(f"error: {error}", file=sys.stderr)
        sys.exit(USER_ERROR_EXIT_CODE)
