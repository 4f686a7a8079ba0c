"""What every stage script shares: one entry point that turns any failure into one line.

Every stage script puts the ``src/`` beside it first on ``sys.path`` before importing tunelab.
``dvc exp run --queue`` runs stages in copies of the repository under ``.dvc/tmp/exps/``; without
that line they would import tunelab through the editable install, i.e. the workspace's ``src/``,
and dvc.lock would record code that did not run. :func:`run_stage` refuses to run a stage whose
tunelab came from anywhere else.
"""

import errno
import inspect
import os
import re
import resource
import signal
import sys
import traceback
from collections.abc import Callable, Iterator
from pathlib import Path

import tunelab
from tunelab.errors import TunelabError

USER_ERROR_EXIT_CODE = 2
FAILURE_EXIT_CODE = 1
DEBUG_ENV = "TUNELAB_DEBUG"  # set to 1 for the traceback of an unexpected error


def _exit_on_sigterm(signum, frame) -> None:
    # SystemExit unwinds like an error: open MLflow runs end FAILED, atomic outputs are discarded.
    raise SystemExit(128 + signum)


def check_code_origin(script: str | Path | None) -> None:
    """Refuse to run when tunelab was not imported from the ``src/`` beside ``script``, a stage
    script (in a folder called stages; anything else calling run_stage is not checked)."""
    if script is None or Path(script).resolve().parent.name != "stages":
        return
    expected = Path(script).resolve().parents[1] / "src" / "tunelab"
    actual = Path(tunelab.__file__).resolve().parent
    if actual != expected:
        raise TunelabError(
            f"{script}: tunelab was imported from {actual}, not from this tree's {expected}; the results would "
            "not come from the code dvc.lock records. Run the stage as dvc.yaml does (python stages/NAME.py), "
            "without anything that imports tunelab first"
        )


FREE_SPACE = "free space, e.g. `dvc gc -w` and old checkpoints/, then run again"
WRITE_FAULTS = {errno.ENOSPC: ("disk full", FREE_SPACE), errno.EDQUOT: ("disk quota exceeded", FREE_SPACE),
                errno.EFBIG: ("file too large for this process's file-size limit",
                              "raise it (`ulimit -f unlimited`), then run again")}
RUST_IO_ERRNO = re.compile(r"\(os error (\d+)\)")
"""How Rust's io::Error (safetensors, tokenizers) ends its message: the errno survives as text."""
TORCH_WRITER_FAILURE = re.compile(r"PytorchStreamWriter failed writing|inline_container\.cc.*unexpected pos|iostream error")
"""torch.save's C++ writer, which drops errno: its failures are classified by what the kernel now
refuses (:func:`probed_write_fault`)."""


def causes(error: BaseException) -> Iterator[BaseException]:
    seen = set()
    while error is not None and id(error) not in seen:
        seen.add(id(error))
        yield error
        error = error.__cause__ or error.__context__


def write_fault(error: BaseException) -> tuple[int, str | None] | None:
    """(errno, file) where ``error`` or anything that caused it is a write the kernel refused for
    space or size; None otherwise."""
    for cause in causes(error):
        if isinstance(cause, OSError) and cause.errno in WRITE_FAULTS:
            return cause.errno, cause.filename
        if (found := RUST_IO_ERRNO.search(str(cause))) and int(found[1]) in WRITE_FAULTS:
            return int(found[1]), None
        if TORCH_WRITER_FAILURE.search(str(cause)) and (number := probed_write_fault()) is not None:
            return number, None
    return None


def probed_write_fault() -> int | None:
    """Why a write without an errno failed: a file-size limit on this process, or a full disk."""
    if resource.getrlimit(resource.RLIMIT_FSIZE)[0] != resource.RLIM_INFINITY:
        return errno.EFBIG
    free = os.statvfs(".")
    return errno.ENOSPC if free.f_bavail * free.f_frsize < 64 * 2**20 else None


def explain(error: BaseException) -> str:
    """One line for an error that is not the user's input: what happened and what to do."""
    if isinstance(error, MemoryError) or type(error).__name__ == "OutOfMemoryError":
        return ("out of memory: lower train.batch_size / eval.batch_size (or format.max_length), "
                "or use a smaller model or strategy=qlora")
    fault = write_fault(error)
    if fault is not None:
        number, filename = fault
        what, remedy = WRITE_FAULTS[number]
        return (f"{what} ({filename or 'writing'}): {remedy}; outputs are written atomically, so nothing "
                "half-written was kept")
    first_line = (str(error).strip().splitlines() or [""])[0]
    return (f"{type(error).__name__}: {first_line} (unexpected: this is likely a tunelab bug; rerun with "
            f"{DEBUG_ENV}=1 for the traceback and report it)")


def run_stage(main: Callable[[], None]) -> None:
    """Run a stage's ``main``; every failure becomes one ``error:`` line on stderr.

    A :class:`TunelabError` (the user's input) exits 2; anything else exits 1, with its traceback
    only when TUNELAB_DEBUG=1. SIGTERM (``dvc queue kill``, a scheduler's timeout) unwinds the
    stage as SIGINT does.
    """
    signal.signal(signal.SIGTERM, _exit_on_sigterm)
    try:
        check_code_origin(inspect.getsourcefile(main))
        main()
    except TunelabError as error:
        print(f"error: {error}", file=sys.stderr)
        sys.exit(USER_ERROR_EXIT_CODE)
    except (SystemExit, KeyboardInterrupt):
        raise
    except BaseException as error:  # noqa: BLE001 - the one place that turns any failure into one line
        if os.environ.get(DEBUG_ENV):
            traceback.print_exc()
        print(f"\nerror: {explain(error)}", file=sys.stderr)  # on its own line, after any progress bar
        sys.exit(FAILURE_EXIT_CODE)


def run_tracked(stage: str, work: Callable, **sections: type) -> None:
    """The shell of a stage whose work needs its config sections alone (``name=Dataclass``, in the
    order ``work`` takes them): read params.yaml, open the stage's MLflow run, which logs those
    sections, and call ``work(PATHS, *sections, tracking)``."""
    from tunelab.config.load import read_params, to_section
    from tunelab.paths import PATHS
    from tunelab.tracking.mlflow_run import stage_run

    params = read_params()
    configs = [to_section(kind, name, params.get(name)) for name, kind in sections.items()]
    with stage_run(stage, params, sections=tuple(sections)) as tracking:
        work(PATHS, *configs, tracking)
