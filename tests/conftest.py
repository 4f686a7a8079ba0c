import os
import sys
from pathlib import Path

import pytest

# Tests never reach a model hub; a code path that tries must fail here, not hang.
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
sys.path.insert(0, str(Path(__file__).parent))

from tiny_model import build_tokenizer, save_tiny_model  # noqa: E402

REPO_ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="session")
def tiny_model_dir(tmp_path_factory) -> Path:
    return save_tiny_model(tmp_path_factory.mktemp("tiny-llama"))


@pytest.fixture(scope="session")
def tiny_tokenizer():
    return build_tokenizer()


@pytest.fixture(scope="session")
def baseline(tmp_path_factory, tiny_model_dir):
    """The tiny pipeline run once per session, every stage process audited, then committed.

    End-to-end tests read it as it is (the first run's assertions) or work on their own
    ``baseline_copy``; none runs the whole pipeline again unless that is what it tests.
    """
    from pipeline_project import Baseline, audited_env, make_project, run

    root = tmp_path_factory.mktemp("baseline")
    repo = make_project(root, tiny_model_dir)
    reads = root / "reads"  # what every stage process opened: dvc.yaml must declare each one
    first = run(repo, "dvc", "exp", "run", env=audited_env(reads))
    run(repo, "git", "add", "-A")
    run(repo, "git", "commit", "-qm", "baseline run")
    return Baseline(repo, first, reads)


@pytest.fixture
def baseline_copy(baseline, tmp_path) -> Path:
    """A copy of the committed baseline (outputs, DVC cache, git history), with a fresh MLflow store."""
    from pipeline_project import copy_project

    return copy_project(baseline.repo, tmp_path / "repo")
