"""The code passes ruff (pyproject.toml's [tool.ruff]: pyflakes, pycodestyle, import order, line length)."""

import subprocess
import sys
from pathlib import Path

from conftest import REPO_ROOT


def test_ruff_finds_nothing():
    ruff = Path(sys.executable).parent / "ruff"
    result = subprocess.run([str(ruff), "check", "--no-cache", "."], cwd=REPO_ROOT, capture_output=True, text=True)
    assert result.returncode == 0, result.stdout[-4000:] + result.stderr[-2000:]
