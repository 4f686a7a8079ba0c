"""The suite's warm stage runner (tests/hooks/warm_*.py) runs a stage as a fresh interpreter would.

Every stage run the suite starts goes through it, so what it changes must be nothing a stage can
see: argv, sys.path, working directory, environment, streams, exit code and the signal that ends
it are the caller's; a caller killed outright takes its stage with it; an environment that differs
in what the preloaded libraries read at import runs cold, and so does a stage whose code reaches a
preloaded submodule it never imports (it fails as it would cold); a warm stage's reads are audited
as a cold one's (the dependency tests' evidence).
"""

import json
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from conftest import COLD_ENV
from pipeline_project import audited_env
from pipeline_project import run as run_in

PROBE = """
import json, os, sys
preloaded = "torch" in sys.modules  # before anything here imports it
line = sys.stdin.readline()
print("to stderr: " + line.strip(), file=sys.stderr)
if sys.argv[1] == "report":
    print(json.dumps({"argv": sys.argv, "path": sys.path, "cwd": os.getcwd(), "env": dict(os.environ),
                      "preloaded": preloaded, "parent": os.getppid(), "name": __name__}))
elif sys.argv[1] == "exit":
    print(preloaded, flush=True)
    sys.exit(int(sys.argv[2]))
elif sys.argv[1] == "raise":
    print(preloaded, flush=True)
    raise ValueError("from the probe")
elif sys.argv[1] == "sleep":
    open("pid", "w").write(str(os.getpid()))
    import time
    time.sleep(600)
"""


@pytest.fixture
def runner(warm_stage_runner) -> Path:
    """The session's runner, once its imports are done."""
    if warm_stage_runner is None:
        pytest.skip(f"{COLD_ENV}=1: no warm stage runner this session")
    socket = warm_stage_runner / "socket"
    for _ in range(1200):
        if socket.exists():
            return socket
        time.sleep(0.25)
    raise AssertionError(f"the warm stage runner did not start:\n{(warm_stage_runner / 'warm.log').read_text()}")


@pytest.fixture
def probe(tmp_path) -> Path:
    (tmp_path / "stages").mkdir()
    (tmp_path / "stages/probe.py").write_text(PROBE)
    return tmp_path


def start(project: Path, *args: str, cold: bool = False, stage: str = "probe", **env: str) -> subprocess.Popen:
    environment = {**os.environ, **env}
    if cold:
        del environment["TUNELAB_WARM_RUNNER"]
    return subprocess.Popen([sys.executable, f"stages/{stage}.py", *args], cwd=project, env=environment, text=True,
                            stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE)


def run(project: Path, *args: str, cold: bool = False, stage: str = "probe", **env: str) -> subprocess.CompletedProcess:
    process = start(project, *args, cold=cold, stage=stage, **env)
    stdout, stderr = process.communicate("a line on stdin\n", timeout=120)
    return subprocess.CompletedProcess(process.args, process.returncode, stdout, stderr)


def report(project: Path, cold: bool = False, **env: str) -> dict:
    result = run(project, "report", cold=cold, **env)
    assert result.returncode == 0, result.stderr
    assert result.stderr == "to stderr: a line on stdin\n"
    return json.loads(result.stdout)


def test_a_warm_stage_sees_what_a_cold_one_sees_but_starts_with_the_libraries_imported(runner, probe):
    cold, warm = report(probe, cold=True), report(probe, MLFLOW_TRACKING_URI="sqlite:///elsewhere.db")
    assert not cold["preloaded"] and warm["preloaded"], (runner.parent / "warm.log").read_text()[-2000:]
    assert cold["parent"] == os.getpid() and warm["parent"] != os.getpid()  # forked by the runner
    assert warm["env"]["MLFLOW_TRACKING_URI"] == "sqlite:///elsewhere.db"
    for seen in (cold, warm):  # the one set differently (an earlier test may have set it here), and the runner's
        seen["env"].pop("MLFLOW_TRACKING_URI", None), seen["env"].pop("TUNELAB_WARM_RUNNER", None)
    # what the preloaded imports set where it was unset (torch: TORCHINDUCTOR_CACHE_DIR), as in a stage importing them
    cold["env"] = {**json.loads(Path(f"{runner}.set_by_imports.json").read_text()), **cold["env"]}
    for seen in (cold, warm):
        del seen["preloaded"], seen["parent"]
    assert warm == cold
    assert cold["name"] == "__main__" and cold["argv"] == ["stages/probe.py", "report"]


@pytest.mark.parametrize("variable", ["HF_HOME", "OMP_NUM_THREADS"])
def test_a_stage_whose_environment_differs_in_what_the_imports_read_runs_cold(runner, probe, variable):
    assert not report(probe, **{variable: os.environ.get(variable, "") + "-differs"})["preloaded"]


def test_a_stage_whose_path_finds_a_preloaded_library_elsewhere_runs_cold(runner, probe, tmp_path):
    """PYTHONPATH may differ unless it, or the stage's own folder, holds a module named like one the
    runner imported: cold, that module would be imported instead."""
    for folder, module in (("helpers", "helper.py"), ("shadows", "peft.py")):
        (tmp_path / folder).mkdir()
        (tmp_path / folder / module).write_text("")
    assert report(probe, PYTHONPATH=f"{tmp_path / 'helpers'}{os.pathsep}{os.environ['PYTHONPATH']}")["preloaded"]
    assert not report(probe, PYTHONPATH=f"{tmp_path / 'shadows'}{os.pathsep}{os.environ['PYTHONPATH']}")["preloaded"]
    (probe / "stages/torch.py").write_text("")
    assert not report(probe)["preloaded"]


def test_a_stage_exits_as_it_would_cold(runner, probe):
    exited = run(probe, "exit", "3")
    assert exited.returncode == 3 and exited.stdout == "True\n"  # it ran warm
    failed = run(probe, "raise")
    assert failed.returncode == 1 and failed.stderr.strip().endswith("ValueError: from the probe")
    assert failed.stdout == "True\n"


FORGETFUL = {  # stages/NAME.py: each reaches a submodule the runner imported (datasets imports pyarrow.parquet)
    "forgets": "import pyarrow\nprint(pyarrow.parquet.__name__)\n",
    "forgets_in_its_code": ("import sys\nsys.path.insert(0, 'src')\nfrom helpers.tables import read\n"
                            "print(read())\n"),
    "imports_it_elsewhere": ("import pyarrow\n\ndef read():\n    return pyarrow.parquet.__name__\n\n"
                             "def later():\n    import pyarrow.parquet\n\nprint(read())\n"),
}
HELPER = "import pyarrow as pa\n\n\ndef read():\n    return pa.parquet.__name__\n"


@pytest.mark.parametrize("stage", FORGETFUL)
def test_a_stage_that_forgets_an_import_fails_warm_exactly_as_it_fails_cold(runner, probe, stage):
    """A forked stage inherits every module the runner imported, so one that reaches a submodule it never
    imports (in its script, or in the project's src/ it imports; an import in another function does
    not count) would work forked and fail cold: the runner sees it in the code and runs it cold."""
    (probe / f"stages/{stage}.py").write_text(FORGETFUL[stage])
    (probe / "src/helpers").mkdir(parents=True)
    (probe / "src/helpers/__init__.py").write_text("")
    (probe / "src/helpers/tables.py").write_text(HELPER)
    warm, cold = run(probe, stage=stage), run(probe, stage=stage, cold=True)
    assert cold.returncode == 1 and cold.stderr.strip().endswith("has no attribute 'parquet'"), cold.stderr
    assert (warm.returncode, warm.stdout, warm.stderr) == (cold.returncode, cold.stdout, cold.stderr)
    why = "src/helpers/tables.py" if stage == "forgets_in_its_code" else f"stages/{stage}.py"
    assert f"{why} reaches pyarrow.parquet without importing it" in (runner.parent / "warm.log").read_text()


def test_a_stage_reaching_what_its_imports_bring_runs_warm(runner, probe):
    """What a fresh interpreter's ``import torch`` brings (torch.nn), or a lazy package's attribute
    imports (numpy.random), is reached cold too: such a stage keeps its warm start."""
    (probe / "stages/brought.py").write_text(
        "import sys\npreloaded = 'torch' in sys.modules\nimport numpy as np\nimport torch\n"
        "print(preloaded, torch.nn.functional.__name__, np.random.__name__)\n")
    warm, cold = run(probe, stage="brought"), run(probe, stage="brought", cold=True)
    assert warm.stdout == "True torch.nn.functional numpy.random\n"
    assert cold.returncode == 0 and cold.stdout == "False torch.nn.functional numpy.random\n"


def test_ci_runs_every_stage_cold():
    """As DVC runs them for a user: the suite's local runs are warm where the runner can promise sameness."""
    assert "TUNELAB_TEST_COLD=1 make test" in (Path(__file__).parents[1] / ".ci/run").read_text()


def test_sigterm_to_the_caller_reaches_the_stage_and_ends_both_by_it(runner, probe):
    process = start(probe, "sleep")
    pid = wait_for_pid(probe, process)
    process.send_signal(signal.SIGTERM)
    assert process.wait(timeout=60) == -signal.SIGTERM
    assert gone(pid)


def test_sigint_to_the_caller_interrupts_the_stage(runner, probe):
    """Ctrl-C: the stage gets its KeyboardInterrupt (and unwinds, as tunelab's stages do) and both end.
    Its exit status is 1, as it is for any cold stage that imports peft: one of the preloaded libraries'
    exit handlers clears CPython's note that it should end by SIGINT (a cold probe importing nothing
    would end by SIGINT; every tunelab stage that trains, aligns or loads an adapter imports peft)."""
    process = start(probe, "sleep")
    pid = wait_for_pid(probe, process)
    process.send_signal(signal.SIGINT)
    assert process.wait(timeout=60) == 1
    assert process.stderr.read().strip().endswith("KeyboardInterrupt")
    assert gone(pid)


def test_a_caller_killed_outright_takes_its_stage_with_it(runner, probe):
    process = start(probe, "sleep")
    pid = wait_for_pid(probe, process)
    process.kill()
    assert process.wait(timeout=60) == -signal.SIGKILL
    assert gone(pid)


@pytest.mark.slow
def test_a_warm_stage_records_the_reads_a_cold_one_records(runner, baseline_copy, tmp_path):
    """The dependency tests find undeclared inputs from these records: a warm stage that missed a
    read (one its preloaded libraries made at import, or made before the audit was installed) would
    let them pass on less evidence than a cold one gives. The stage: evaluating the trained model,
    which loads the base model, the adapter, the tokenizer and the test rows."""
    records = {}
    for mode, env in (("cold", {"TUNELAB_WARM_RUNNER": ""}), ("warm", {})):
        run_in(baseline_copy, "python", "stages/evaluate.py", "trained", env={**audited_env(tmp_path / mode), **env})
        [records[mode]] = map(audit_record, (tmp_path / mode).glob("*.json"))
    cold, warm = records["cold"], records["warm"]
    assert warm.pop("preloaded") and not cold.pop("preloaded")  # each ran as it says
    assert {"models/base/config.json", "models/trained/adapter_config.json", "data/prepared/test.jsonl"} <= set(cold["opened"])
    assert warm == cold, {kind: {"cold only": sorted(set(cold[kind]) - set(warm[kind])),
                                 "warm only": sorted(set(warm[kind]) - set(cold[kind]))} for kind in ("opened", "listed")}


def audit_record(path: Path) -> dict:
    # an atomic write's temporary folder is named by its process id: the same folder, cold or warm
    return json.loads(re.sub(r"\.tmp-\d+", ".tmp-PID", path.read_text()))


def wait_for_pid(project: Path, process: subprocess.Popen) -> int:
    process.stdin.write("go\n")
    process.stdin.flush()
    for _ in range(600):
        if (project / "pid").exists() and (text := (project / "pid").read_text()):
            assert int(text) != process.pid, "the probe ran cold: the signal tests would prove nothing"
            return int(text)
        assert process.poll() is None, process.communicate()
        time.sleep(0.1)
    raise AssertionError("the probe did not start")


def gone(pid: int, timeout: float = 10) -> bool:
    """The process ended and was reaped by its parent (the runner), within ``timeout`` seconds."""
    for _ in range(int(timeout / 0.05)):
        if not Path(f"/proc/{pid}").exists():
            return True
        time.sleep(0.05)
    return False


@pytest.mark.skipif("PYTEST_XDIST_WORKER" not in os.environ, reason="only parallel workers share the cores")
def test_a_worker_and_the_stages_it_starts_use_only_their_share_of_the_cores():
    """xdist's controller loads conftest.py too: a thread count it set there reached every worker
    unchanged (2 threads in each of 2 workers on 2 cores), oversubscribing every torch process."""
    import torch

    workers = int(os.environ["PYTEST_XDIST_WORKER_COUNT"])
    assert torch.get_num_threads() * workers <= (os.cpu_count() or 1), (
        f"{workers} workers × {torch.get_num_threads()} threads on {os.cpu_count()} cores (OMP_NUM_THREADS set outside?)")
