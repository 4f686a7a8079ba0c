"""train.launcher: the program dvc.yaml puts before ``stages/train.py``, checked to run that
script and nothing else.

dvc.yaml runs ``${train.launcher} stages/train.py`` in a shell, so the value must hold no shell
syntax, and its words must not turn the script into an argument of some other program
(``torchrun --no-python PROG``, ``python -m MODULE``, a positional ``other.py`` before it).
accelerate's and torchrun's own argument parsers read the words, so every flag they document
(``--num_processes``, ``--config_file``, ``--nproc_per_node``, ...) stays allowed without a list
of ours; python has no parser to borrow, so its few interpreter options are listed here.
"""

import contextlib
import io
import re
import shlex
from collections.abc import Callable

from tunelab.errors import TunelabError

SCRIPT = "stages/train.py"
SAFE_COMMAND = re.compile(r"^[\w./:=,+ -]+$")  # no shell metacharacters: ; & | < > $ ` ( ) quotes # newline
PYTHON_OPTIONS = {"-u": False, "-B": False, "-O": False, "-OO": False, "-E": False, "-s": False, "-I": False,
                  "-X": True, "-W": True}
"""The interpreter options that change how the script runs, not which code runs (True: takes a value)."""


def python_runs_script(words: list[str]) -> str | None:
    position = 1
    while position < len(words):
        word = words[position]
        if word not in PYTHON_OPTIONS:
            return f"python option {word!r} is not one of {sorted(PYTHON_OPTIONS)}"
        position += 2 if PYTHON_OPTIONS[word] else 1
    return None if position == len(words) else "python -X and -W need a value"


def parsed(parser, words: list[str]):
    """argparse's result, or None where it would exit (its usage text is not our one line)."""
    with contextlib.redirect_stderr(io.StringIO()), contextlib.redirect_stdout(io.StringIO()):
        try:
            return parser.parse_args([*words, SCRIPT])
        except SystemExit:
            return None


def runs_only_the_script(arguments, tool: str) -> str | None:
    if arguments is None:
        return f"{tool} does not accept these arguments"
    if arguments.no_python or arguments.module:
        return f"{tool} would run something other than the Python script {SCRIPT} (--no-python or --module)"
    if arguments.training_script != SCRIPT or arguments.training_script_args:
        return f"{tool} would run {arguments.training_script!r}, not {SCRIPT}; give it flags only"
    return None


def accelerate_runs_script(words: list[str]) -> str | None:
    if words[1:2] != ["launch"]:
        return "use 'accelerate launch ...'"
    from accelerate.commands.launch import launch_command_parser

    arguments = parsed(launch_command_parser(), words[2:])
    problem = runs_only_the_script(arguments, "accelerate launch")
    return problem or (config_file_problem(arguments.config_file) if arguments.config_file else None)


def config_file_problem(path: str) -> str | None:
    """What accelerate's own parser says of a ``--config_file`` (launch/*.yaml), or that it needs
    what this environment lacks (DeepSpeed: CUDA and the deepspeed package) — before training starts."""
    import importlib.util

    from accelerate.commands.config.config_args import load_config_from_file

    try:
        config = load_config_from_file(path)
    except FileNotFoundError:
        return f"--config_file {path}: no such file (the shipped ones are in launch/)"
    except Exception as error:  # noqa: BLE001 - whatever accelerate's parser raises is the reason, in its words
        reason = str(error).splitlines()[0] if str(error) else type(error).__name__
        return f"--config_file {path}: accelerate rejects it: {reason}"
    if config.distributed_type.value == "DEEPSPEED" and importlib.util.find_spec("deepspeed") is None:
        return (f"--config_file {path} is a DeepSpeed config: it needs CUDA and `pip install deepspeed==0.19.8`, "
                "which this environment lacks")
    return None


def torchrun_runs_script(words: list[str]) -> str | None:
    from torch.distributed.run import get_args_parser

    return runs_only_the_script(parsed(get_args_parser(), words[1:]), "torchrun")


LAUNCHERS: dict[str, Callable[[list[str]], str | None]] = {
    "python": python_runs_script, "accelerate": accelerate_runs_script, "torchrun": torchrun_runs_script}


def check_launcher(key: str, command: str) -> None:
    """A known program with words and flags only, which runs stages/train.py and nothing else."""
    words = shlex.split(command) if SAFE_COMMAND.match(command) else []
    if not words or words[0] not in LAUNCHERS:
        raise TunelabError(f"{key}: {command!r} is not a launcher tunelab runs; it must start with one of "
                           f"{list(LAUNCHERS)} and hold only words and flags (no shell characters such as ; & | $ `), "
                           "e.g. 'accelerate launch --num_processes 2'")
    problem = LAUNCHERS[words[0]](words)
    if problem:
        raise TunelabError(f"{key}: {command!r}: {problem}; e.g. 'accelerate launch --num_processes 2' or "
                           "'torchrun --nproc_per_node 2'")
