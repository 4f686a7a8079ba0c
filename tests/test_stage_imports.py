"""A stage imports a heavy library only on the path that uses it.

Each stage is a fresh process (DVC runs one per stage), so a library imported at a stage's top
level is paid by every run of it, skipped or not: torch ~2 s, scipy.stats and scikit-learn ~1 s
each on this host (`make bench-startup` measures it). These stages never need them before main()
has decided to (evaluate and load_test may skip; the others use none of them at all).
"""

import subprocess
import sys

import pytest
from conftest import REPO_ROOT

HEAVY = ("torch", "transformers", "peft", "trl", "mlflow", "scipy.stats", "sklearn")
LIGHT_AT_THE_TOP = ("check", "base", "fetch", "prepare", "format", "preferences", "align", "evaluate", "load_test",
                    "report")

PROBE = """
import runpy, sys
runpy.run_path(sys.argv[1], run_name="probe")  # the script's top level, not main()
print(" ".join(name for name in sys.argv[2:] if name in sys.modules))
"""


def heavy_imports_at_the_top(stage: str) -> list[str]:
    """The heavy libraries in sys.modules after running ``stages/STAGE.py``'s top level in a fresh interpreter."""
    result = subprocess.run([sys.executable, "-c", PROBE, str(REPO_ROOT / "stages" / f"{stage}.py"), *HEAVY],
                            capture_output=True, text=True, cwd=REPO_ROOT, check=True)
    return result.stdout.split()


@pytest.mark.parametrize("stage", LIGHT_AT_THE_TOP)
def test_a_stages_top_level_imports_no_heavy_library(stage):
    found = heavy_imports_at_the_top(stage)
    assert found == [], f"stages/{stage}.py imports {' '.join(found)} at its top level"


def test_the_probe_sees_a_heavy_import():
    """The same probe on a stage that needs torch at its top level (it trains): it must report it."""
    assert "torch" in heavy_imports_at_the_top("train")
