import os
import shutil
import signal
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest

# Tests never reach a model hub; a code path that tries must fail here, not hang.
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
# `make test` runs the suite on parallel pytest-xdist workers (README "Tests"). Each worker, and
# every stage process its tests start, gets its share of the cores: oversubscribed OpenMP
# threads (two torch processes × 2 threads on 2 cores) slow every process ~20×. Set before
# anything imports torch, and only in a worker: xdist's controller loads this file too, and a
# value set there would reach every worker as if the user had set it.
WORKERS = int(os.environ.get("PYTEST_XDIST_WORKER_COUNT", "1"))
if "PYTEST_XDIST_WORKER" in os.environ:
    os.environ.setdefault("OMP_NUM_THREADS", str(max(1, (os.cpu_count() or 1) // WORKERS)))
sys.path.insert(0, str(Path(__file__).parent))

from tiny_model import build_tokenizer, save_tiny_model  # noqa: E402

REPO_ROOT = Path(__file__).resolve().parents[1]


def pytest_collection_modifyitems(items) -> None:
    """The order that keeps parallel workers busy: first one test that needs the pipeline baseline
    (its worker makes the baseline while the others run every test that needs none), then the
    tests that need none, then the rest of the baseline's tests: first the one that makes the
    sweep, then those that rerun stages (a long test last would leave the other workers idle),
    then the others, and last the sweep's other readers (taken before the sweep is made, a worker
    would sit idle until it is). Otherwise in file order (stable sort)."""
    def first_needing(fixture: str):
        return next((item for item in items if fixture in item.fixturenames), None)

    first, first_swept = first_needing("baseline"), first_needing("swept")

    def rank(item) -> int:
        if item is first:
            return 0
        if "baseline" not in item.fixturenames:
            return 1
        if item is first_swept:
            return 2
        if item.get_closest_marker("reruns_stages"):
            return 3
        return 5 if "swept" in item.fixturenames else 4

    items.sort(key=rank)


def made_once(tmp_path_factory, name: str, make) -> Path:
    """``make(folder)`` run by the first worker that asks for ``name``, in a folder every worker of
    this session shares; the others wait for it and get the same folder. A failure is kept, so
    they fail with it instead of making it again."""
    from filelock import FileLock

    base = tmp_path_factory.getbasetemp()
    folder = (base.parent if "PYTEST_XDIST_WORKER" in os.environ else base) / name
    failure, made = folder.with_suffix(".failed"), folder / ".made"
    with FileLock(f"{folder}.lock"):
        if failure.exists():
            raise AssertionError(f"making {name} failed (in another worker):\n{failure.read_text()}")
        if not made.exists():
            shutil.rmtree(folder, ignore_errors=True)  # what a killed worker left half made
            folder.mkdir()
            try:
                make(folder)
            except BaseException as error:
                failure.write_text(f"{type(error).__name__}: {error}")
                raise
            made.touch()
    return folder


HOOKS = Path(__file__).parent / "hooks"  # its sitecustomize.py is in every Python process the suite starts
COLD_ENV = "TUNELAB_TEST_COLD"  # set to 1 to run every stage in a fresh interpreter, as DVC does outside the suite


@pytest.fixture(scope="session", autouse=True)
def warm_stage_runner(tmp_path_factory):
    """This worker's warm stage runner (tests/hooks/warm_server.py): every stage run that the suite
    starts from here on, through DVC or directly, is forked from a process that has the libraries
    imported, unless its environment differs in what those imports read or its sys.path would import
    one of them from another file. Its log (each run, warm or cold and why, how long it ran) is kept
    as warm-runner.log in the worker's pytest temporary folder."""
    os.environ["PYTHONPATH"] = os.pathsep.join(filter(None, [str(HOOKS), os.environ.get("PYTHONPATH")]))
    if os.environ.get(COLD_ENV) == "1":
        yield None
        return
    folder = Path(tempfile.mkdtemp(prefix="tunelab-warm-"))  # short: a socket's path has at most 107 bytes
    os.environ["TUNELAB_WARM_RUNNER"] = str(folder / "socket")
    with open(folder / "warm.log", "w") as log:
        server = subprocess.Popen([sys.executable, str(HOOKS / "warm_server.py"), str(folder / "socket")],
                                  env=dict(os.environ), stdout=log, stderr=log, start_new_session=True)
    yield folder
    server.send_signal(signal.SIGTERM)
    server.wait()
    shutil.copy(folder / "warm.log", tmp_path_factory.getbasetemp() / "warm-runner.log")
    shutil.rmtree(folder, ignore_errors=True)


@pytest.fixture(scope="session")
def tiny_model_dir(tmp_path_factory) -> Path:
    return made_once(tmp_path_factory, "tiny-llama", save_tiny_model)


@pytest.fixture(scope="session")
def tiny_tokenizer():
    return build_tokenizer()


def make_baseline(root: Path, tiny_model_dir: Path) -> None:
    from pipeline_project import audited_env, make_project, run, save_run

    repo = make_project(root, tiny_model_dir)
    save_run(root / "first_run.json", run(repo, "dvc", "exp", "run", env=audited_env(root / "reads")))
    run(repo, "git", "add", "-A")
    run(repo, "git", "commit", "-qm", "baseline run")


@pytest.fixture(scope="session")
def baseline(tmp_path_factory, tiny_model_dir):
    """The tiny pipeline run once per session (by one worker, for all), every stage process
    audited, then committed.

    End-to-end tests read it as it is (the first run's assertions) or work on their own
    ``baseline_copy``; none runs the whole pipeline again unless that is what it tests.
    """
    from pipeline_project import Baseline, load_run

    root = made_once(tmp_path_factory, "baseline", lambda folder: make_baseline(folder, tiny_model_dir))
    return Baseline(root / "repo", load_run(root / "first_run.json"), root / "reads")


@pytest.fixture
def baseline_copy(baseline, tmp_path) -> Path:
    """A copy of the committed baseline (outputs, DVC cache, git history), with a fresh MLflow store."""
    from pipeline_project import copy_project

    return copy_project(baseline.repo, tmp_path / "repo")
