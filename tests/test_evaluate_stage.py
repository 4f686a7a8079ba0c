"""The format, evaluate and report stages as processes, on a tiny random model and hand-made reviews."""

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from conftest import REPO_ROOT
from pipeline_project import audited_env

from tunelab.config.compose import compose_conf

LABELS = ["negative", "positive"]


def write_rows(path: Path, count: int, start: int = 0) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    rows = [{"id": f"r{i}", "text": f"review {i} {'great' if i % 2 else 'awful'}", "label": LABELS[i % 2]}
            for i in range(start, start + count)]
    path.write_text("".join(json.dumps(row) + "\n" for row in rows))


@pytest.fixture
def workdir(tmp_path, tiny_model_dir) -> Path:
    """What the evaluate stage reads: params.yaml, data/prepared, models/base."""
    params = compose_conf(REPO_ROOT / "conf", ["eval.prompting.chain_of_thought.max_new_tokens=6",
                                               "eval.prompting.self_consistency.max_new_tokens=6",
                                               "eval.prompting.self_consistency.samples=3",
                                               "eval.prompting.few_shot.shots=2", "eval.batch_size=4",
                                               "eval.prompt_search.shots=[0,2]", "eval.prompt_search.rows=5",
                                               "eval.prompt_search.candidates=null"])
    params["tracking"]["enabled"] = False
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    write_rows(tmp_path / "data/prepared/train.jsonl", 10)
    write_rows(tmp_path / "data/prepared/val.jsonl", 6, start=50)
    write_rows(tmp_path / "data/prepared/test.jsonl", 7, start=100)
    shutil.copytree(tiny_model_dir, tmp_path / "models/base")
    return tmp_path


def run_stage(workdir: Path, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, *args], cwd=workdir, capture_output=True, text=True)


def search_prompt(workdir: Path) -> dict:
    """The search stage, its reads audited: the table and winner it wrote."""
    reads = workdir / "reads"
    result = subprocess.run([sys.executable, str(REPO_ROOT / "stages/search_prompt.py")], cwd=workdir,
                            capture_output=True, text=True, env={**os.environ, **audited_env(reads)})
    assert result.returncode == 0, result.stderr[-2000:]
    opened = {path for record in reads.glob("*.json") for path in json.loads(record.read_text())["opened"]}
    assert {"data/prepared/val.jsonl", "data/prepared/train.jsonl"} <= opened
    assert not any("test" in path for path in opened)  # the search never reads a test row
    return json.loads((workdir / "metrics/prompt_search.json").read_text())


@pytest.mark.slow
def test_base_variant_scores_every_prompting_method_and_the_report_tabulates_them(workdir):
    search = search_prompt(workdir)
    table = {c["name"]: c for c in search["candidates"]}
    # 2 templates × (0 shots, 2 balanced, 2 nearest) × calibration off/on, each scored on the 5 val rows
    assert len(table) == 12 and {c["examples"] for c in table.values()} == {5}
    assert search["winner"] == max(table.values(), key=lambda c: (c["score"], -c["shots"]))
    assert all(c["ci95"][0] <= c["score"] <= c["ci95"][1] for c in table.values())
    result = run_stage(workdir, str(REPO_ROOT / "stages/evaluate.py"), "base")
    assert result.returncode == 0, result.stderr[-2000:]
    summary = json.loads((workdir / "metrics/eval/base.json").read_text())
    methods = summary["prompting"]
    assert list(methods) == ["zero_shot", "few_shot", "role", "chain_of_thought", "self_consistency", "optimized"]
    optimized = methods["optimized"]
    assert (optimized["method"], optimized["template"], optimized["shots"]) == (
        "optimized", search["winner"]["name"], search["winner"]["shots"])
    assert optimized["scoring"]["choice"]["examples"] == 7  # the winner, scored once on every test row
    assert ("calibration_bias" in optimized["scoring"]["choice"]) == search["winner"]["calibrate"]
    assert set(methods["zero_shot"]["scoring"]) == {"choice", "generate"}
    assert set(methods["self_consistency"]["scoring"]) == {"generate"}

    predictions = [json.loads(line) for line in (workdir / "data/predictions/base/zero_shot.jsonl").read_text().splitlines()]
    assert [p["id"] for p in predictions] == [f"r{i}" for i in range(100, 107)]
    for p in predictions:  # the predicted label is the likelier choice
        assert p["choice"]["prediction"] == max(p["choice"]["logprobs"], key=p["choice"]["logprobs"].get)
    correct = sum(p["choice"]["prediction"] == p["label"] for p in predictions)
    assert methods["zero_shot"]["scoring"]["choice"]["accuracy"] == correct / 7
    voted = [json.loads(line) for line in (workdir / "data/predictions/base/self_consistency.jsonl").read_text().splitlines()]
    assert all(len(p["generate"]["texts"]) == 3 and 0 <= p["generate"]["vote_share"] <= 1 for p in voted)
    confusion = (workdir / "metrics/confusion/base/zero_shot-choice.csv").read_text().splitlines()
    assert confusion[0] == "actual,predicted" and len(confusion) == 8

    report = run_stage(workdir, str(REPO_ROOT / "stages/report.py"))
    assert report.returncode == 0, report.stderr[-2000:]
    metrics = json.loads((workdir / "metrics/eval.json").read_text())
    assert metrics["base/zero_shot/choice"]["accuracy"] == round(correct / 7, 4)
    assert "base/self_consistency/generate" in metrics
    assert "| base | zero_shot | choice |" in (workdir / "metrics/report.md").read_text()
    assert f"| base | none (prompting) | optimized ({search['winner']['name']}) |" in (workdir / "metrics/report.md").read_text()
    assert "## Prompt search on val" in (workdir / "metrics/report.md").read_text()
    assert "| variant | prompting | scoring | accuracy [95% CI]" in report.stdout


def test_a_template_without_answer_choices_stops_the_stage_and_writes_nothing(workdir):
    params = yaml.safe_load((workdir / "params.yaml").read_text())
    params["eval"]["prompting"]["role"]["template"]["answer_choices"] = None
    (workdir / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    result = run_stage(workdir, str(REPO_ROOT / "stages/evaluate.py"), "base")
    assert result.returncode == 2
    assert result.stderr.strip().splitlines()[-1] == (
        "error: prompt 'sentiment_role': no answer_choices; scoring needs one choice per label in data.labels order, "
        "e.g. answer_choices: negative ||| positive")
    assert not (workdir / "metrics/eval").exists() and not (workdir / "data/predictions/base").exists()


def test_unknown_variant_and_missing_trained_model_are_named(workdir):
    unknown = run_stage(workdir, str(REPO_ROOT / "stages/evaluate.py"), "int3")
    assert unknown.returncode == 2
    assert "unknown model variant 'int3': not base, trained, aligned, or a folder in models/deploy/" in unknown.stderr
    missing = run_stage(workdir, str(REPO_ROOT / "stages/evaluate.py"), "trained")
    assert missing.returncode == 2 and "models/trained: no tunelab_strategy.json; run the train stage first" in missing.stderr


def test_a_split_that_no_example_of_fits_max_length_is_one_line_and_writes_nothing(workdir):
    """Train fits format.max_length (128), every val row is far longer: refused before any split is written."""
    long_review = " ".join(["a moving, funny and wonderful film"] * 40)
    (workdir / "data/prepared/val.jsonl").write_text(
        "".join(json.dumps({"id": f"v{i}", "text": long_review, "label": LABELS[i % 2]}) + "\n" for i in range(3)))
    result = run_stage(workdir, str(REPO_ROOT / "stages/format.py"))
    assert result.returncode == 2
    assert result.stderr.strip().splitlines()[-1].startswith(
        "error: format.max_length: every val example is longer than 128 tokens (p50 ")
    assert not (workdir / "data/formatted").exists()  # not even the train split, which fitted


@pytest.fixture
def proposer_server(tmp_path, tiny_model_dir):
    """A real OpenAI-compatible server (`transformers serve`) on loopback, serving the tiny model
    with sampling on (its greedy answer is a run of newlines); yields (base_url, model)."""
    import socket

    from tunelab.serving.engines import Server

    model = tmp_path / "proposer-model"
    shutil.copytree(tiny_model_dir, model)
    generation = json.loads((model / "generation_config.json").read_text())
    (model / "generation_config.json").write_text(json.dumps({**generation, "do_sample": True}))
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    command = [str(Path(sys.executable).parent / "transformers"), "serve", "--host", "127.0.0.1", "--port", str(port),
               "--log-level", "warning"]
    with Server(command, f"http://127.0.0.1:{port}/v1", tmp_path / "serve.log", start_timeout=120, cwd=tmp_path):
        yield f"http://127.0.0.1:{port}/v1", str(model)


def with_search(workdir: Path, **search) -> None:
    params = yaml.safe_load((workdir / "params.yaml").read_text())
    params["eval"]["prompt_search"] |= search
    (workdir / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))


@pytest.mark.slow
def test_the_proposer_asks_a_live_openai_compatible_server_for_instructions_scored_like_the_rest(workdir, proposer_server):
    base_url, model = proposer_server
    with_search(workdir, shots=[0], calibrate=[False],
                proposer={"base_url": base_url, "model": model, "rounds": 2, "proposals": 2, "max_tokens": 12})
    search = search_prompt(workdir)
    grid, proposed = search["candidates"][:2], search["candidates"][2:]
    assert [c["name"] for c in grid] == ["sentiment_instruction, 0 shots", "sentiment_role, 0 shots"]
    assert proposed and {c["name"].split("+proposed")[1][0] for c in proposed} <= {"1", "2"}  # two rounds at most
    for candidate in proposed:  # the grid's winner with the proposal as its system message, on the same val rows
        leader = next(c for c in grid if candidate["name"].startswith(c["template"]["name"] + "+proposed"))
        assert candidate["template"] | {"name": leader["template"]["name"], "system": leader["template"]["system"]} \
            == leader["template"]
        assert candidate["template"]["system"] and candidate["examples"] == 5
    assert len({c["template"]["system"] for c in proposed}) == len(proposed)  # repeats dropped


def test_a_proposer_nobody_serves_is_one_line_before_the_model_loads(workdir):
    with_search(workdir, proposer={"base_url": "http://127.0.0.1:9/v1", "model": "m"})
    result = run_stage(workdir, str(REPO_ROOT / "stages/search_prompt.py"))
    assert result.returncode == 2
    assert result.stderr.strip().splitlines()[-1] == (
        "error: eval.prompt_search.proposer.base_url: no OpenAI-compatible server answered at http://127.0.0.1:9/v1 "
        "(APIConnectionError); start one (e.g. `transformers serve`) or set eval.prompt_search.proposer=null")
    assert not (workdir / "metrics/prompt_search.json").exists()
