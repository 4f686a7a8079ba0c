"""The generative tasks on the tiny random model: math (GSM8K's shape) and extractive QA (SQuAD's JSON,
split by article) end to end through DVC, each on a copy of the baseline with the shipped data
config's sources made local files; chat (multi-turn messages) through the prepare, format, evaluate
and report stages as processes (tests/test_pipeline.py runs a chat task through DVC). The tiny
model writes nonsense; what is tested is what the stages make of it."""

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from conftest import REPO_ROOT
from pipeline_project import ALIGNMENT, audited_env, ran_stages, run, undeclared_reads

from tunelab.config.compose import compose_conf
from tunelab.io.atomic import write_jsonl
from tunelab.io.jsonl import read_jsonl

METHODS = ("zero_shot", "few_shot", "role", "chain_of_thought", "self_consistency", "optimized")
HEADLINES = {"math": "accuracy", "extractive_qa": "exact_match", "generation": "rougeL"}


def math_rows() -> list[dict]:
    rows = [{"question": f"What is {a} + {a + 3}?", "answer": f"{a} + {a + 3} = {2 * a + 3}\n#### {2 * a + 3}"}
            for a in range(20)]
    return rows + [{"question": "What is  0 + 3?", "answer": "#### 3"}]  # the first question again, respaced


def generated_math_rows() -> list[dict]:
    """data.train_source's rows, as fetch writes them: every GSM8K question again, respaced (those that
    val or test hold must be dropped), and twelve new ones."""
    again = [{"question": row["question"].replace(" + ", "  +  "), "answer": row["answer"]} for row in math_rows()[:20]]
    return again + [{"question": f"What is {a} - 1?", "answer": f"#### {a - 1}"} for a in range(100, 112)]


def harder_math_rows() -> list[dict]:
    """An extra test set: one question the train split has (dropped), four it does not."""
    return [{"question": "What is 100 - 1?", "answer": "#### 99"}] + [
        {"question": f"What is {a} times 2?", "answer": f"{a} * 2 = {2 * a}\n#### {2 * a}"} for a in range(4)]


def squad() -> dict:
    """Six articles of four questions each (SQuAD's nesting), one gold answer or two."""
    articles = []
    for a in range(6):
        context = f"Town {a} lies on river {a}. It was founded in year {1800 + a}."
        qas = [{"id": f"a{a}q{q}", "question": f"Question {q} about town {a}?",
                "answers": [{"text": f"river {a}", "answer_start": 13}] + [{"text": f"{1800 + a}", "answer_start": 40}] * (q % 2)}
               for q in range(4)]
        articles.append({"title": f"Town_{a}", "paragraphs": [{"context": context, "qas": qas}]})
    return {"version": "1.1", "data": articles}


def chat_rows() -> list[dict]:
    rows = []
    for i in range(20):
        turns = [{"role": "user", "content": f"hello {i}"}, {"role": "assistant", "content": f"hi there {i}"}]
        if i % 2:  # every other chat has a second exchange and a system message
            turns = [{"role": "system", "content": "Be brief."}, *turns, {"role": "user", "content": "and bye?"},
                     {"role": "assistant", "content": f"bye {i}"}]
        rows.append({"messages": turns})
    return rows


TASKS = {
    "math": ("gsm8k", "test.jsonl", lambda: "".join(json.dumps(r) + "\n" for r in math_rows())),
    "extractive_qa": ("squad_v1", "squaddev_v1.1.json", lambda: json.dumps(squad())),
    "generation": ("local_chat", "chats.jsonl", lambda: "".join(json.dumps(r) + "\n" for r in chat_rows())),
}


def project(root: Path, tiny_model_dir: Path, task: str) -> Path:
    """What the stages read, for ``task``'s shipped config: params.yaml, data/raw, models/base."""
    data, raw_file, content = TASKS[task]
    overrides = [f"data={data}", *tiny_overrides(task)]
    params = compose_conf(REPO_ROOT / "conf", overrides + (["data.source.path=unused"] if task == "generation" else []))
    params["tracking"]["enabled"] = False
    (root / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    (root / "data/raw/main").mkdir(parents=True)
    (root / "data/raw/main" / raw_file).write_text(content())
    provenance = {"file": raw_file}
    if task == "math":  # the GSM8K data file's train split is generated (data.train_source)
        (root / "data/raw/train").mkdir()
        write_jsonl(root / "data/raw/train/generated.jsonl", generated_math_rows())
        provenance["train"] = {"file": "generated.jsonl", "format": "jsonl"}
        (root / "data/raw/extra/harder").mkdir(parents=True)
        write_jsonl(root / "data/raw/extra/harder/harder.jsonl", harder_math_rows())
        provenance["extra"] = {"harder": {"file": "harder.jsonl"}}
    (root / "data/raw/source.json").write_text(json.dumps(provenance))
    shutil.copytree(tiny_model_dir, root / "models/base")
    return root


def stage(root: Path, name: str, *args: str) -> subprocess.CompletedProcess:
    result = subprocess.run([sys.executable, str(REPO_ROOT / "stages" / f"{name}.py"), *args], cwd=root,
                            capture_output=True, text=True)
    assert result.returncode == 0, result.stderr[-3000:]
    return result


def rows(path: Path) -> list[dict]:
    return read_jsonl(path)  # as the stages read it: blank lines (an empty output's one) skipped


THROUGH_DVC = ("math", "extractive_qa")
# what the math task's sources hold, as files in the repository: the test set, the train source, the extra set
MATH_FILES = {"test.jsonl": math_rows, "generated.jsonl": generated_math_rows, "harder.jsonl": harder_math_rows}


def tiny_overrides(task: str) -> list[str]:
    """The shipped task at the tiny model's scale: six test rows, four scored per method."""
    overrides = ["data.test_size=6", "data.val_size=4", "data.train_size=null", "eval.limit=4",
                 "eval.prompting.self_consistency.samples=3", "eval.batch_size=4", "format.max_length=256",
                 *[f"eval.prompting.{m}.max_new_tokens=6" for m in METHODS]]
    if task == "math":  # and an extra test set, scored beside the test split
        overrides.append("+eval.extra_test_sets.harder={source: {kind: local_file, path: harder.jsonl}, size: 3}")
    return overrides


def with_local_sources(repo: Path, task: str) -> tuple[str, list[str]]:
    """conf/data/local_NAME.yaml: the shipped data config of ``task`` with each source a file in ``repo``
    (what a user with the data on disk writes); its name and the files the check stage fingerprints."""
    data, raw_file, content = TASKS[task]
    config = yaml.safe_load((repo / f"conf/data/{data}.yaml").read_text())
    if task == "math":
        for name, make in MATH_FILES.items():
            write_jsonl(repo / name, make())
        config["data"]["source"] = {"kind": "local_file", "path": "test.jsonl"}
        config["data"]["train_source"] = {"kind": "local_file", "path": "generated.jsonl"}
        files = list(MATH_FILES)
    else:
        (repo / raw_file).write_text(content())
        config["data"]["source"] = {"kind": "local_file", "path": raw_file}
        files = [raw_file]
    (repo / f"conf/data/local_{data}.yaml").write_text("# @package _global_\n" + yaml.safe_dump(config, sort_keys=False))
    return f"local_{data}", files


@pytest.mark.slow
@pytest.mark.reruns_stages
@pytest.mark.parametrize("task", THROUGH_DVC)
def test_a_generative_task_runs_end_to_end_through_dvc(task, baseline_copy, tmp_path, tiny_tokenizer):
    """``dvc exp run -S data=...`` on the shipped task's config, every stage process audited; no
    quantized variant and no MLflow (the baseline and the chat run test those)."""
    project = baseline_copy
    data, sources = with_local_sources(project, task)
    overrides = [f"data={data}", *tiny_overrides(task), "train.max_steps=10", "quantize.variants=[]",
                 "tracking.enabled=false"]
    result = run(project, "dvc", "exp", "run", *[arg for o in overrides for arg in ("-S", o)],
                 env=audited_env(tmp_path / "reads"))
    assert set(ran_stages(result)) == {"fetch", "prepare", "format", "train", "search_prompt", "evaluate@base",
                                       "evaluate@trained", *ALIGNMENT, "quantize", "benchmark", "load_test",
                                       "report"}  # base: cached
    assert undeclared_reads(project, tmp_path / "reads", *sources) == {}
    staged = (task, project, {"evaluate": result})
    prepared_prompts_with_references_split_without_overlap(staged)
    formatted_with_loss_on_every_assistant_turn_and_its_end_of_turn_token_only(staged, tiny_tokenizer)
    evaluated_by_generation_for_every_method_with_the_tasks_metrics(staged)
    reported_with_the_tasks_own_headline(staged)
    headline = HEADLINES[task]
    trained = json.loads((project / "metrics/eval/trained.json").read_text())["prompting"]["zero_shot"]
    assert trained["scoring"]["generate"]["examples"] == 4 and headline in trained["scoring"]["generate"]
    assert "| trained | lora | zero_shot (" in (project / "metrics/report.md").read_text()


@pytest.mark.slow
def test_a_chat_task_is_prepared_formatted_evaluated_and_reported(tmp_path, tiny_model_dir, tiny_tokenizer):
    """Its four stages as processes, each check below a function of its own, named for what it holds."""
    root = project(tmp_path, tiny_model_dir, "generation")
    outputs = {name: stage(root, name, *args) for name, args in
               (("prepare", ()), ("format", ()), ("search_prompt", ()), ("evaluate", ("base",)), ("report", ()))}
    staged = ("generation", root, outputs)
    prepared_prompts_with_references_split_without_overlap(staged)
    formatted_with_loss_on_every_assistant_turn_and_its_end_of_turn_token_only(staged, tiny_tokenizer)
    evaluated_by_generation_for_every_method_with_the_tasks_metrics(staged)
    reported_with_the_tasks_own_headline(staged)


def prepared_prompts_with_references_split_without_overlap(staged):
    task, root, _ = staged
    stats = json.loads((root / "data/prepared/stats.json").read_text())
    assert stats["task"] == task and "labels" not in stats
    train_size = stats["examples"] - stats["unused_examples"] - 10
    if task == "math":  # train: the generated rows, less the ten that ask what a val or test row asks
        assert stats["unused_examples"] == stats["examples"] - 10
        assert stats["train_source"] == {"raw_rows": 32, "dropped": {}, "examples": 32, "overlaps_evaluation": 10}
        train_size = 22
        held_out = {r["question"].replace(" ", "") for split in ("val", "test")
                    for r in rows(root / f"data/prepared/{split}.jsonl")}
        assert not any(r["question"].replace(" ", "") in held_out for r in rows(root / "data/prepared/train.jsonl"))
        assert stats["extra_test_sets"] == {"harder": {"raw_rows": 5, "dropped": {}, "examples": 5,
                                                       "overlaps_train_or_val": 1, "rows": 3}}
        harder = rows(root / "data/prepared/extra_test.jsonl")
        assert {r["test_set"] for r in harder} == {"harder"} and all("times 2" in r["question"] for r in harder)
    else:
        assert rows(root / "data/prepared/extra_test.jsonl") == []  # no extra test set: no rows
    assert stats["split_sizes"] == {"train": train_size, "val": 4, "test": 6}
    assert stats["overlap"] == {"train/val": 0, "train/test": 0, "val/test": 0}
    test = rows(root / "data/prepared/test.jsonl")
    assert all(row["references"] and all(isinstance(r, str) and r for r in row["references"]) for row in test)
    if task == "math":
        assert stats["dropped"] == {"duplicate_prompt": 1} and stats["raw_rows"] == 21
        assert set(test[0]) == {"id", "question", "references"} and test[0]["references"][0].count("####") == 1
    if task == "extractive_qa":  # SQuAD: ids kept, several gold answers, one article per split
        titles = {split: {r["title"] for r in rows(root / f"data/prepared/{split}.jsonl")} for split in ("train", "val", "test")}
        assert not (titles["train"] & titles["test"] or titles["train"] & titles["val"] or titles["val"] & titles["test"])
        assert stats["groups"] == {split: len(names) for split, names in titles.items()}
        assert {len(r["references"]) for r in test} == {1, 2} and test[0]["id"].startswith("a")
    if task == "generation":  # a chat: its earlier turns, its last user turn, the answer as the reference
        multi = next(r for r in test if r["history"])
        assert multi["history"][0] == {"role": "system", "content": "Be brief."} and multi["prompt"] == "and bye?"
        assert multi["references"] == [f"bye {multi['history'][1]['content'].split()[-1]}"]


def formatted_with_loss_on_every_assistant_turn_and_its_end_of_turn_token_only(staged, tiny_tokenizer):
    task, root, _ = staged
    report = json.loads((root / "data/formatted/report.json").read_text())
    assert report["splits"]["train"]["dropped_truncated"] == 0 and report["splits"]["train"]["eos_at_end_share"] == 1.0
    for row in rows(root / "data/formatted/train.jsonl"):
        assert row["messages"][-1] == {"role": "assistant", "content": row["target"]}
        spans, current = [], []
        for token, loss in zip(row["input_ids"], row["completion_mask"]):
            if loss:
                current.append(token)
            elif current:
                spans, current = spans + [current], []
        answers = [turn["content"] for turn in row["messages"] if turn["role"] == "assistant"]
        assert [tiny_tokenizer.decode(span) for span in spans + ([current] if current else [])] == \
            [f"{answer}<|im_end|>" for answer in answers]
        first_answer = next(i for i, turn in enumerate(row["messages"]) if turn["role"] == "assistant")
        before = tiny_tokenizer.apply_chat_template(row["messages"][:first_answer], tokenize=False, add_generation_prompt=True)
        assert row["input_ids"][: row["prompt_length"]] == tiny_tokenizer(before, add_special_tokens=False)["input_ids"]
    if task == "math":
        assert row["target"].endswith(f"#### {row['references'][0].split('#### ')[-1]}")


def evaluated_by_generation_for_every_method_with_the_tasks_metrics(staged):
    task, root, _ = staged
    summary = json.loads((root / "metrics/eval/base.json").read_text())
    headline = HEADLINES[task]
    assert (summary["task"], summary["metrics"][0]) == (task, headline) and "labels" not in summary
    assert list(summary["prompting"]) == list(METHODS)
    for name, result in summary["prompting"].items():
        report = result["scoring"]["generate"]
        assert list(result["scoring"]) == ["generate"] and report["examples"] == 4
        low, high = report[f"{headline}_ci95"]
        assert 0 <= low <= report[headline] <= high <= 1 and 0 <= report["unparseable_share"] <= 1
    predictions = rows(root / "data/predictions/base/self_consistency.jsonl")
    test = {row["id"]: row for row in rows(root / "data/prepared/test.jsonl")}
    for prediction in predictions:
        assert prediction["references"] == test[prediction["id"]]["references"]
        assert len(prediction["generate"]["texts"]) == 3
        assert ("votes" in prediction["generate"]) == (task != "generation")  # free text is not voted on
    few_shot = rows(root / "data/predictions/base/few_shot.jsonl")
    zero_shot = rows(root / "data/predictions/base/zero_shot.jsonl")
    assert all(f["prompt_tokens"] > z["prompt_tokens"] for f, z in zip(few_shot, zero_shot))  # the demonstrations
    assert (root / "metrics/confusion/base/zero_shot-generate.csv").read_text() == "actual,predicted\n"
    assert ("extra_test_sets" in summary) == (task == "math")
    if task == "math":  # every method scored again on the extra set, its predictions beside the test split's
        assert list(summary["extra_test_sets"]["harder"]) == list(METHODS)
        for name, result in summary["extra_test_sets"]["harder"].items():
            assert result["scoring"]["generate"]["examples"] == 3 and "accuracy_ci95" in result["scoring"]["generate"]
            harder = rows(root / f"data/predictions/base/extra/harder/{name}.jsonl")
            assert len(harder) == 3 and all(" * 2 = " in p["references"][0] for p in harder)


def reported_with_the_tasks_own_headline(staged):
    task, root, outputs = staged
    headline = HEADLINES[task]
    evaluated = json.loads((root / "metrics/eval.json").read_text())
    zero_shot = evaluated["base/zero_shot/generate"]
    assert zero_shot["metric"] == headline and f"{headline}_ci_low" in zero_shot
    trained = {"trained/zero_shot/generate"} if task in THROUGH_DVC else set()  # through DVC it trains too
    assert set(evaluated) == {f"base/{m}/generate" for m in METHODS} | trained
    report = (root / "metrics/report.md").read_text()
    assert f"| scoring | {headline} [95% CI] | vs best: Δ [interval] |" in report
    test = "paired bootstrap" if task == "generation" else "McNemar exact (conditional)"  # a mean, or a proportion
    assert f"| {test} |" in report.split("## Against the best, row by row")[1]
    for prediction in rows(root / "data/predictions/base/zero_shot.jsonl"):  # each row's headline, for the pairs
        assert 0 <= prediction["generate"]["score"] <= 1
    assert f"evaluate: base/zero_shot/generate: {headline} " in outputs["evaluate"].stdout
    if task == "math":  # the extra set's headline as its own column, the same figure as evaluated
        assert "| size MB | harder: accuracy [95% CI] |" in report
        harder = json.loads((root / "metrics/eval/base.json").read_text())["extra_test_sets"]["harder"]
        assert zero_shot["harder.accuracy"] == round(harder["zero_shot"]["scoring"]["generate"]["accuracy"], 4)
        assert "evaluate: base/harder.zero_shot/generate: accuracy " in outputs["evaluate"].stdout


@pytest.mark.parametrize(("task", "broken_row", "message"), [
    ("math", {"question": "What is 1 + 1?"}, "22: missing field 'answer' (fields present: ['question'])"),
    ("generation", {"messages": [{"role": "user", "content": "a"}, {"role": "user", "content": "b"}]},
     "21: turn 2 is 'user', expected 'assistant': roles must alternate user, assistant after an optional system turn"),
])
def test_a_broken_row_stops_prepare_in_one_line_naming_file_and_line_and_writes_nothing(task, broken_row, message,
                                                                                          tmp_path, tiny_model_dir):
    root = project(tmp_path, tiny_model_dir, task)
    raw = root / "data/raw/main" / TASKS[task][1]
    raw.write_text(raw.read_text() + json.dumps(broken_row) + "\n")
    result = subprocess.run([sys.executable, str(REPO_ROOT / "stages/prepare.py")], cwd=root, capture_output=True,
                            text=True)
    assert result.returncode == 2
    assert result.stderr.strip() == f"error: {Path('data/raw/main') / TASKS[task][1]}:{message}"
    assert not (root / "data/prepared").exists()
