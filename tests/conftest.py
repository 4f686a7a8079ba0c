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


@pytest.fixture
def project(tmp_path, tiny_model_dir) -> Path:
    """A git+DVC repo holding the project's pipeline, configured for the tiny model and data."""
    from pipeline_project import make_project

    return make_project(tmp_path, tiny_model_dir)
