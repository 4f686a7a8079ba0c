"""README's commands stay true: every fenced `dvc exp run -S …` composes from conf/ and passes
the check stage's validation of the whole config (the part that needs no data on disk)."""

import shlex

import pytest
from conftest import REPO_ROOT

from tunelab.config.compose import compose_conf
from tunelab.validation import validate_config

PLACEHOLDERS = {"$PWD": "/data", "<commit>": "0" * 40}


def readme_commands(prefix: str = "dvc exp run") -> list[str]:
    """Each command in README's fenced blocks that starts with ``prefix``, continuation lines joined."""
    lines, fence = [], None
    for line in (REPO_ROOT / "README.md").read_text().replace("\\\n", " ").splitlines():
        if line.startswith("```"):
            fence = None if fence is not None else line[3:]
        elif fence == "bash":
            lines.append(line)
    commands = []
    for line in lines:
        for placeholder, value in PLACEHOLDERS.items():
            line = line.replace(placeholder, value)
        words = shlex.split(line, comments=True)
        while words and " ".join(words[:3]) == prefix:
            rest = words[3:]
            end = rest.index("&&") if "&&" in rest else len(rest)
            commands.append(shlex.join(words[:3] + rest[:end]))
            words = rest[end + 1:]
    return commands


def overrides_of(command: str) -> list[str]:
    words = shlex.split(command)
    return [words[i + 1] for i, word in enumerate(words) if word == "-S"]


def test_readme_shows_the_commands_a_newcomer_needs():
    commands = readme_commands()
    assert len(commands) >= 15
    assert any("data=local_file" in c and "data.format=csv" in c and "data.labels=" in c for c in commands)
    assert any("hw=gpu" in c for c in commands) and any("model.chat_template=" in c for c in commands)


@pytest.mark.parametrize("command", readme_commands())
def test_each_dvc_exp_run_in_readme_composes_and_passes_the_check(command):
    validate_config(compose_conf(REPO_ROOT / "conf", overrides_of(command)))
