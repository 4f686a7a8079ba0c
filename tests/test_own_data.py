"""A newcomer's own data and model through the real stages (each a process, as DVC starts it):
a three-label CSV with no template written, ShareGPT chats, a test split kept as it is, DoRA, and
a chat template given to a model that has none; and each new path's bad input, one line, exit 2,
nothing written."""

import csv
import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from conftest import REPO_ROOT

from tunelab.config.compose import compose_conf
from tunelab.io.jsonl import read_jsonl

TINY = ["data.test_size=6", "data.val_size=6", "data.train_size=null", "eval.limit=6", "eval.batch_size=6",
        "train.max_steps=2", "train.eval_steps=2", "train.batch_size=4", "train.profile_steps=0",
        "eval.prompt_search.rows=6", "eval.prompt_search.candidates=2", "eval.prompt_search.shots=[0]",
        "eval.prompt_search.selection=[balanced]", "eval.prompt_search.calibrate=[false]",
        "eval.prompting.few_shot.shots=2", "eval.prompting.chain_of_thought.limit=2",
        "eval.prompting.self_consistency.limit=2", "eval.prompting.self_consistency.samples=2",
        *[f"eval.prompting.{method}.max_new_tokens=4" for method in
          ("zero_shot", "few_shot", "role", "chain_of_thought", "self_consistency", "optimized")]]
COLORS = {"red": "a cherry, a fire truck", "green": "grass, a frog", "blue": "the sea, the sky"}


def three_label_csv(path: Path, rows: int = 36) -> Path:
    with path.open("w", newline="") as out:
        writer = csv.writer(out)
        writer.writerow(["sentence", "colour"])
        for i in range(rows):
            colour = list(COLORS)[i % 3]
            writer.writerow([f"Item {i} has the colour of {COLORS[colour]}.", colour])
    return path


def project(root: Path, tiny_model_dir: Path | None, raw_file: str | None, overrides: list[str],
            provenance: dict | None = None) -> Path:
    """What the stages read: params.yaml composed from conf/ with ``overrides``, data/raw with the
    file fetch would have copied, and the tiny model as models/base."""
    params = compose_conf(REPO_ROOT / "conf", [*TINY, *overrides])
    params["tracking"]["enabled"] = False
    root.mkdir(parents=True, exist_ok=True)
    (root / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    if raw_file is not None:
        (root / "data/raw/main").mkdir(parents=True)
        (root / "data/raw/source.json").write_text(json.dumps({"file": raw_file, **(provenance or {})}))
    if tiny_model_dir is not None:
        shutil.copytree(tiny_model_dir, root / "models/base")
    return root


def stage(root: Path, name: str, *args: str, ok: bool = True, env: dict | None = None) -> subprocess.CompletedProcess:
    result = subprocess.run([sys.executable, str(REPO_ROOT / "stages" / f"{name}.py"), *args], cwd=root,
                            capture_output=True, text=True, env={**os.environ, **(env or {})})
    if ok:
        assert result.returncode == 0, result.stderr[-3000:]
    return result


def refused_by_prepare(root: Path) -> str:
    """The one line prepare stopped with (exit 2), having written nothing."""
    result = stage(root, "prepare", ok=False)
    assert result.returncode == 2, result.stderr
    assert not (root / "data/prepared").exists()
    return result.stderr.strip()


def rows(path: Path) -> list[dict]:
    return read_jsonl(path)  # as the stages read it: blank lines (an empty output's one) skipped


LOCAL_CSV = ["data=local_file", "data.source.path=colours.csv", "data.format=csv", "data.text_field=sentence",
             "data.label_field=colour"]


@pytest.mark.slow
def test_a_three_label_csv_needs_no_template_and_its_labels_can_be_read_from_the_file(tmp_path, tiny_model_dir):
    """The command README shows, at the tiny model's scale: labels auto, a description, no prompt
    written; every prompting method derives from the generic template; the report's confusion
    matrices are 3×3."""
    root = project(tmp_path, tiny_model_dir, "colours.csv",
                   [*LOCAL_CSV, "data.labels=auto", "data.description=the colour of the item"])
    three_label_csv(root / "data/raw/main/colours.csv")
    for name, args in (("prepare", ()), ("format", ()), ("search_prompt", ()), ("evaluate", ("base",)), ("report", ())):
        stage(root, name, *args)
    stats = json.loads((root / "data/prepared/stats.json").read_text())
    assert stats["label_names"] == ["blue", "green", "red"]  # sorted
    first = rows(root / "data/formatted/test.jsonl")[0]
    assert "What is the colour of the item? Answer with one of: blue, green, red." in first["prompt"]
    assert first["choices"] == ["blue", "green", "red"] and first["target"] == first["label"]
    evaluated = json.loads((root / "metrics/eval/base.json").read_text())["prompting"]
    for method in ("zero_shot", "few_shot", "role"):
        confusion = evaluated[method]["scoring"]["choice"]["confusion_matrix"]
        matrix = confusion["rows_gold_columns_predicted"]
        assert confusion["labels"] == ["blue", "green", "red"], method
        assert len(matrix) == 3 and all(len(row) == 3 for row in matrix) and sum(map(sum, matrix)) == 6, method
    assert "| base | zero_shot | choice | " in (root / "metrics/report.md").read_text()


def test_the_generic_template_is_the_default_for_your_own_data_and_the_sentiment_one_for_the_reviews():
    own = compose_conf(REPO_ROOT / "conf", [*LOCAL_CSV, "data.labels=[a,b,c]"])
    assert own["prompt"]["name"] == "classification"
    assert all(own["eval"]["prompting"][m].get("template") is None for m in ("role", "chain_of_thought"))  # derived
    assert compose_conf(REPO_ROOT / "conf")["prompt"]["name"] == "sentiment_instruction"
    chosen = compose_conf(REPO_ROOT / "conf", [*LOCAL_CSV, "prompt=sentiment_role"])
    assert chosen["prompt"]["name"] == "sentiment_role"  # an explicit choice still wins


SHAREGPT = [{"conversations": [{"from": "system", "value": "Be brief."}, {"from": "human", "value": f"hello {i}"},
                               {"from": "gpt", "value": f"hi there {i}"}]} for i in range(20)]


@pytest.mark.slow
def test_sharegpt_chats_are_prepared_and_formatted_with_loss_on_the_answers(tmp_path, tiny_model_dir, tiny_tokenizer):
    root = project(tmp_path, tiny_model_dir, "chats.jsonl",
                   ["data=local_chat", "data.source.path=chats.jsonl", "data.layout=sharegpt"])
    (root / "data/raw/main/chats.jsonl").write_text("".join(json.dumps(row) + "\n" for row in SHAREGPT))
    stage(root, "prepare")
    stage(root, "format")
    formatted = rows(root / "data/formatted/train.jsonl")[0]
    assert [turn["role"] for turn in formatted["messages"]] == ["system", "user", "assistant"]
    learned = tiny_tokenizer.decode([t for t, m in zip(formatted["input_ids"], formatted["completion_mask"]) if m])
    assert learned.startswith("hi there") and learned.endswith("<|im_end|>")


def test_a_sharegpt_turn_with_an_unknown_role_stops_prepare_in_one_line(tmp_path):
    root = project(tmp_path, None, "chats.jsonl",
                   ["data=local_chat", "data.source.path=chats.jsonl", "data.layout=sharegpt"])
    broken = {"conversations": [{"from": "human", "value": "hi"}, {"from": "bot", "value": "hello"}]}
    (root / "data/raw/main/chats.jsonl").write_text("".join(json.dumps(row) + "\n" for row in [*SHAREGPT, broken]))
    assert refused_by_prepare(root) == ("error: data/raw/main/chats.jsonl:21: turn 2 has from 'bot', none of ['assistant', "
                                        "'gpt', 'human', 'system', 'tool', 'user']; map it, e.g. "
                                        "-S 'data.roles={bot: assistant}'")


COMMIT = "0123456789abcdef0123456789abcdef01234567"  # a hub revision: a commit sha, as the check requires
KEPT_TEST = ["data.test_source={kind: local_file, path: test.csv}"]


def kept_test_project(root: Path, test_rows: list[list[str]]) -> Path:
    project(root, None, "colours.csv", [*LOCAL_CSV, "data.labels=[red,green,blue]", *KEPT_TEST],
            {"test": {"file": "test.csv"}})
    three_label_csv(root / "data/raw/main/colours.csv", rows=30)
    (root / "data/raw/test").mkdir()
    with (root / "data/raw/test/test.csv").open("w", newline="") as out:
        csv.writer(out).writerows([["sentence", "colour"], *test_rows])
    return root


def test_your_own_test_split_is_kept_as_it_is_and_the_rest_is_split_into_train_and_val(tmp_path):
    own = [[f"A brand new thing {i}, coloured like {COLORS[c]}.", c] for i, c in enumerate(["blue", "red", "green"] * 3)]
    root = kept_test_project(tmp_path, own)
    stage(root, "prepare")
    test = rows(root / "data/prepared/test.jsonl")
    assert [(row["text"], row["label"]) for row in test] == [tuple(row) for row in own]  # its rows, in its order
    stats = json.loads((root / "data/prepared/stats.json").read_text())
    assert stats["split_sizes"] == {"train": 24, "val": 6, "test": 9} and stats["unused_examples"] == 0
    assert stats["test_source"] == {"raw_rows": 9, "dropped": {}, "examples": 9}
    assert set(stats["overlap"].values()) == {0}


def test_a_kept_test_split_that_overlaps_the_training_data_is_refused_in_one_line(tmp_path):
    root = kept_test_project(tmp_path, [["Item 4 has the colour of grass, a frog.", "green"],
                                        ["Something else entirely, blue like the sea.", "blue"]])
    assert refused_by_prepare(root).startswith("error: data.test_source: 1 of its 2 rows are also in data.source, "
                                               "which gives train and val (first: row ")


def test_labels_auto_on_a_column_of_distinct_values_is_refused_in_one_line(tmp_path):
    root = project(tmp_path, None, "colours.csv", [*LOCAL_CSV, "data.labels=auto", "data.label_field=sentence"])
    three_label_csv(root / "data/raw/main/colours.csv", rows=5000)
    assert refused_by_prepare(root) == ("error: data.labels: auto found 5000 distinct values in field 'sentence', "
                                        "more than data.max_labels (50): is it the label column? Name the labels "
                                        "(-S 'data.labels=[a,b,c]') or raise data.max_labels")


@pytest.mark.slow
def test_dora_trains_through_the_train_stage_and_merges(tmp_path, tiny_model_dir):
    root = project(tmp_path, tiny_model_dir, "colours.csv",
                   [*LOCAL_CSV, "data.labels=[red,green,blue]", "+strategy.lora.peft.use_dora=true",
                    "strategy.lora.target_modules=[all-linear]", "quantize.variants=[merged]"])
    three_label_csv(root / "data/raw/main/colours.csv")
    for name in ("prepare", "format", "train", "quantize"):
        stage(root, name)
    adapter = json.loads((root / "models/trained/adapter_config.json").read_text())
    assert adapter["use_dora"] is True
    adapted = {name.rsplit(".", 1)[-1] for name in adapter["target_modules"]}
    assert adapted == {"q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"}  # not lm_head
    assert json.loads((root / "metrics/quantize.json").read_text())["variants"]["merged"]["status"] == "made"


@pytest.mark.parametrize(("override", "message"), [
    ("+train.extra_args.neftune_noise_alpa=5", "error: config key train.extra_args.neftune_noise_alpa: not a field "
                                                 "of transformers's TrainingArguments; did you mean neftune_noise_alpha?"),
    ("+strategy.lora.peft.use_dorra=true", "error: config key strategy.lora.peft.use_dorra: not a field of peft's "
                                            "LoraConfig; did you mean use_dora?"),
    ("+train.extra_args.learning_rate=0.1", "error: config key train.extra_args.learning_rate: tunelab sets "
                                              "learning_rate itself (from a train key); set that key, not "
                                              "train.extra_args.learning_rate"),
    ("model.chat_template=nosuch", "error: config key model.chat_template: 'nosuch' is neither a shipped template "
                                   "['chatml'] nor a Jinja file that exists"),
])
def test_an_option_passed_to_a_library_that_it_lacks_stops_the_check_stage(override, message, tmp_path):
    root = project(tmp_path, None, "colours.csv", [*LOCAL_CSV, override])
    result = stage(root, "check", ok=False)
    assert (result.returncode, result.stderr.strip()) == (2, message)
    assert not (root / "data/origin.json").exists()


@pytest.mark.slow
def test_a_model_without_a_chat_template_gets_the_one_named_and_every_stage_after_uses_it(tmp_path, tiny_model_dir):
    bare = shutil.copytree(tiny_model_dir, tmp_path / "bare-model")
    (bare / "chat_template.jinja").unlink(missing_ok=True)
    config = json.loads((bare / "tokenizer_config.json").read_text())
    config.pop("chat_template", None)
    (bare / "tokenizer_config.json").write_text(json.dumps(config))
    root = project(tmp_path / "project", None, "colours.csv",
                   [*LOCAL_CSV, "data.labels=[red,green,blue]", "model=local_dir", f"model.path={bare}",
                    "model.chat_template=chatml"])
    three_label_csv(root / "data/raw/main/colours.csv")
    for name in ("base", "prepare", "format"):
        stage(root, name)
    assert (root / "models/base/chat_template.jinja").read_text().startswith("{%- for message in messages %}")
    prompt = rows(root / "data/formatted/test.jsonl")[0]["prompt"]
    assert prompt.startswith("<|im_start|>user\nWhich label fits this text?") and prompt.endswith("<|im_start|>assistant\n")


HUB_FIELDS = ["data.text_field=sentence", "data.label_field=colour", "data.val_size=6", "data.test_size=6"]


def test_a_hub_dataset_is_fetched_at_its_revision_by_load_dataset_and_prepared(tmp_path):
    """The hub code path, offline: datasets.load_dataset reads a local dataset folder as it reads a
    hub id, and fetch saves what it loaded, at the revision named, for prepare."""
    import datasets

    three_label_csv(tmp_path / "colours.csv")
    rows_of_csv = list(csv.DictReader((tmp_path / "colours.csv").open()))
    saved = tmp_path / "hub-dataset"
    datasets.DatasetDict({"train": datasets.Dataset.from_list(rows_of_csv[:30]),
                          "test": datasets.Dataset.from_list(rows_of_csv[30:])}).save_to_disk(str(saved))
    root = project(tmp_path / "project", None, None,
                   ["data=hub_dataset", f"data.source.dataset={saved}", f"data.source.revision={COMMIT}", *HUB_FIELDS])
    stage(root, "fetch")
    provenance = json.loads((root / "data/raw/source.json").read_text())
    assert (provenance["kind"], provenance["format"], provenance["revision"]) == ("hf_hub", "hf_dataset_dir", COMMIT)
    stage(root, "prepare")
    stats = json.loads((root / "data/prepared/stats.json").read_text())
    assert stats["label_names"] == ["blue", "green", "red"] and stats["raw_rows"] == 36  # both splits, pooled


def test_a_hub_dataset_that_cannot_be_loaded_stops_fetch_in_one_line(tmp_path):
    root = project(tmp_path, None, None, ["data=hub_dataset", "data.source.dataset=nobody/no-such-dataset",
                                          f"data.source.revision={COMMIT}", *HUB_FIELDS])
    result = stage(root, "fetch", ok=False, env={"HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1"})
    assert result.returncode == 2, result.stderr
    assert result.stderr.strip().startswith("error: data.source.dataset: 'nobody/no-such-dataset' at revision "
                                            f"'{COMMIT}' could not be loaded (")
    assert len(result.stderr.strip().splitlines()) == 1 and not (root / "data/raw").exists()


@pytest.mark.parametrize("init", ["pissa", "olora"])
def test_an_adapter_that_reshaped_the_base_is_saved_to_apply_to_the_unchanged_base(init, tmp_path, tiny_model_dir):
    """PiSSA and OLoRA move part of each base weight into the adapter; models/trained must still be
    an adapter over models/base as it is (quantize merges it there, evaluate loads it there)."""
    import torch
    from peft import PeftModel
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from tunelab.config.load import to_section
    from tunelab.config.schema import StrategyConfig
    from tunelab.training.strategies import save_initial_adapter, save_trained, trainable_model

    params = compose_conf(REPO_ROOT / "conf", [f"+strategy.lora.peft.init_lora_weights={init}"])
    strategy = to_section(StrategyConfig, "strategy", params["strategy"])
    model = trainable_model(tiny_model_dir, strategy)
    initial = save_initial_adapter(model, strategy, tmp_path / "initial")
    with torch.no_grad():  # what training does: the adapter moves
        for name, parameter in model.named_parameters():
            if "lora_" in name:
                parameter.add_(0.05 * torch.randn_like(parameter))
    ids = torch.tensor([[5, 6, 7, 8, 9]])
    trained_logits = model.eval()(input_ids=ids).logits  # eval: no adapter dropout
    tokenizer = AutoTokenizer.from_pretrained(tiny_model_dir)
    save_trained(model, tokenizer, strategy, tmp_path / "converted", initial)
    save_trained(model, tokenizer, strategy, tmp_path / "unconverted")

    def logits_over_the_base(adapter: Path):
        base = AutoModelForCausalLM.from_pretrained(tiny_model_dir)
        return PeftModel.from_pretrained(base, adapter).eval()(input_ids=ids).logits

    assert torch.allclose(logits_over_the_base(tmp_path / "converted"), trained_logits, atol=1e-4)
    converted = json.loads((tmp_path / "converted/adapter_config.json").read_text())
    # a plain LoRA adapter: any engine that adds B·A to the base weights (vLLM's LoRA serving) reads it
    assert (converted["r"], converted["init_lora_weights"]) == (2 * strategy.lora.r, True)
    # unconverted, it holds only if the loader reshapes the base again, as peft does and vLLM does not
    assert json.loads((tmp_path / "unconverted/adapter_config.json").read_text())["init_lora_weights"] == init


TOOL_TEMPLATE = """{%- for message in messages %}<|im_start|>{{ message['role'] }}
{% if message.get('tool_calls') %}{% for call in message['tool_calls'] %}<tool_call>{{ call['function']['name'] }} \
{{ call['function']['arguments'] }}</tool_call>{% endfor %}{% else %}{{ message['content'] }}{% endif %}{{ eos_token }}
{% endfor %}{% if add_generation_prompt %}<|im_start|>assistant
{% endif %}"""


def tool_chats() -> list[dict]:
    return [{"messages": [
        {"role": "user", "content": f"Weather in city {i}?"},
        {"role": "assistant", "content": None, "tool_calls": [
            {"type": "function", "function": {"name": "get_weather", "arguments": f'{{"city": {i}}}'}}]},
        {"role": "tool", "content": f"{10 + i}C"},
        {"role": "assistant", "content": f"It is {10 + i}C in city {i}."}]} for i in range(20)]


@pytest.mark.slow
def test_tool_calls_are_trained_where_the_chat_template_renders_them_and_refused_where_not(tmp_path, tiny_model_dir,
                                                                                           tiny_tokenizer):
    (tmp_path / "tools.jinja").write_text(TOOL_TEMPLATE)
    chat = ["data=local_chat", "data.source.path=chats.jsonl", "model=local_dir", f"model.path={tiny_model_dir}",
            f"model.chat_template={tmp_path / 'tools.jinja'}"]
    root = project(tmp_path / "renders", None, "chats.jsonl", chat)
    (root / "data/raw/main/chats.jsonl").write_text("".join(json.dumps(row) + "\n" for row in tool_chats()))
    for name in ("base", "prepare", "format"):
        stage(root, name)
    formatted = rows(root / "data/formatted/train.jsonl")[0]
    assert [turn["role"] for turn in formatted["messages"]] == ["user", "assistant", "tool", "assistant"]
    learned = tiny_tokenizer.decode([t for t, m in zip(formatted["input_ids"], formatted["completion_mask"]) if m])
    assert "<tool_call>get_weather" in learned and "It is" in learned  # the call and the answer, not the result
    assert "C<|im_end|>\n<|im_start|>assistant" not in learned

    own_template = project(tmp_path / "drops", tiny_model_dir, "chats.jsonl", chat[:2])  # tiny's ChatML: no tool_calls
    (own_template / "data/raw/main/chats.jsonl").write_text((root / "data/raw/main/chats.jsonl").read_text())
    stage(own_template, "prepare")
    result = stage(own_template, "format", ok=False)
    assert result.returncode == 2
    error = next(line for line in re.split(r"[\r\n]", result.stderr) if "error:" in line)  # after the progress bar
    assert re.fullmatch(r".*error: row \w+: the model's chat template does not render tool calls \(function "
                        r"'get_weather' is not in the rendered chat\); use a model whose template does, or set "
                        r"model.chat_template to a Jinja file that renders tool_calls", error)
    assert not (own_template / "data/formatted").exists()
