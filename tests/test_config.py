"""Every file in conf/ composes and validates; bad keys and types are named before any work."""

import shutil

import pytest
import yaml
from conftest import REPO_ROOT

from tunelab.alignment.methods import ALIGN_METHODS
from tunelab.config.compose import check_params_current, compose_conf, first_difference
from tunelab.config.load import read_params, to_section
from tunelab.config.schema import SECTIONS, DataConfig, EvalConfig, TrainConfig
from tunelab.errors import TunelabError
from tunelab.training.strategies import STRATEGIES
from tunelab.validation import validate_config

CONF = REPO_ROOT / "conf"
# Options whose files leave a required value to the user (Hydra's ???), or that fit another task's data.
REQUIRED_OVERRIDES = {
    "prompt=gsm8k": ["data=gsm8k"],
    "prompt=squad": ["data=squad_v1"],
    "prompt=instruction": ["data=alpaca_demo"],
    "model=local_dir": ["model.path=/models/mine"],
    "model=hub": ["model.hub_id=org/model", "model.revision=e6281661ce1c48d982bc483cf8a173c1bbeb5d31"],
    "data=local_file": ["data.source.path=reviews.jsonl"],
    "data=local_chat": ["data.source.path=chats.jsonl"],
    "data=hub_dataset": ["data.source.dataset=stanfordnlp/imdb", "data.source.revision=e6281661ce1c48d982bc483cf8a173c1bbeb5d31"],
}


def group_options() -> list[str]:
    return sorted(f"{folder.name}={file.stem}" for folder in CONF.iterdir() if folder.is_dir() for file in folder.glob("*.yaml"))


def test_every_group_option_is_covered():
    groups = {option.split("=")[0] for option in group_options()}
    assert groups == {"model", "data", "prompt", "strategy", "tracking", "eval", "quantize", "bench", "serve", "align", "hw"}
    # every registered strategy (and alignment method) has its conf file, and every such file names a registered one
    strategy_files = {option for option in group_options() if option.startswith("strategy=")}
    assert strategy_files == {f"strategy={name}" for name in STRATEGIES.names()}
    align_files = {option for option in group_options() if option.startswith("align=")}
    assert align_files == {f"align={name}" for name in ALIGN_METHODS.names()}


@pytest.mark.parametrize("option", group_options())
def test_every_conf_file_composes_and_validates(option):
    composed = compose_conf(CONF, [option, *REQUIRED_OVERRIDES.get(option, [])])
    validate_config(composed)  # the strategy and deployment-method registries know every name
    for name, cls in SECTIONS.items():
        assert isinstance(to_section(cls, name, composed[name]), cls)


def test_every_conf_file_says_how_to_select_it():
    for file in CONF.rglob("*.yaml"):
        assert file.read_text().startswith("# "), f"{file} should start with the command that selects it"


def test_committed_params_yaml_is_what_conf_composes_to():
    assert first_difference(compose_conf(CONF), read_params(REPO_ROOT / "params.yaml", check_current=False)) is None


def test_default_data_pins_the_real_vader_sdist():
    data = to_section(DataConfig, "data", compose_conf(CONF)["data"])
    assert data.source.kind == "pip_sdist" and len(data.source.sha256) == 64
    assert data.labels == ["negative", "positive"] and data.rating_margin == 0.5


@pytest.mark.parametrize(
    ("section", "change", "message"),
    [
        ("data", {"test_sze": 10}, r"config key data.test_sze: Key 'test_sze' not in 'DataConfig'"),
        ("data", {"test_size": "many"}, r"config key data.test_size: Value 'many' .* could not be converted to Integer"),
        ("data", {"source": {"kind": "ftp"}}, r"config key data.source.kind: unknown value 'ftp'"),
        ("data", {"format": "xml"}, r"config key data.format: unknown value 'xml'; expected one of \['vader_tsv'"),
        ("data", {"label_field": "label"}, r"set exactly one of data.label_field and data.rating_field"),
        ("model", {"source": "local_dir", "path": None}, r"config key model.path: must be set when model.source=local_dir"),
        ("model", {"path": "???", "source": "local_dir"}, r"config key model.path: must be set when"),
        ("format", {"max_length": 2}, r"format.max_length: 2 is too small"),
        ("strategy", {"name": "dpo"}, r"config key strategy.name: unknown value 'dpo'"),
        ("strategy", {"ia3": {"target_modules": ["k_proj"], "feedforward_modules": [], "peft": {}}},
         r"config key strategy.ia3: does not apply to strategy=lora \(it reads: \['lora'\]\)"),
        ("strategy", {"lora": {"rank": 4}}, r"config key strategy.lora.rank: Key 'rank' not in 'LoraOptions'"),
        ("strategy", {"name": "qlora"}, r"config key strategy.quantization: must be set for strategy=qlora"),
        ("train", {"precision": "fp8"}, r"config key train.precision: unknown value 'fp8'"),
        ("train", {"max_steps": 0}, r"train.max_steps: 0; use a positive count or -1"),
        ("train", {"learning_rate": "fast"}, r"config key train.learning_rate: Value 'fast'"),
        ("eval", {"prompting": {"cot": {"method": "cot", "scoring": ["generate"], "max_new_tokens": 8}}},
         r"config key eval.prompting.cot.method: unknown value 'cot'; expected one of \['zero_shot', 'few_shot'"),
        ("eval", {"prompting": {"zero_shot": {"method": "few_shot"}}},
         r"eval.prompting.zero_shot.shots: set shots > 0 exactly when"),
        ("eval", {"prompting": {"zero_shot": {"method": "chain_of_thought", "scoring": ["choice"]}}},
         r"eval.prompting.zero_shot.scoring: chain_of_thought reasons before it answers"),
        ("eval", {"prompting": {"zero_shot": {"method": "zero_shot", "shot": 2}}},
         r"config key eval.prompting.zero_shot.shot: Key 'shot' not in 'PromptingConfig'"),
        ("eval", {"prompting": {"zero_shot": {"method": "zero_shot", "template": {"name": "t"}}}},
         r"config key eval.prompting.zero_shot.template.template: .* missing mandatory value"),
        ("quantize", {"variants": ["merged", "int4"]}, r"config key quantize.variants: unknown value 'int4'"),
        ("bench", {"batch_sizes": []}, r"bench: batch_sizes >= 1"),
        ("eval", {"fine_tuned_prompting": ["zero_shot", "cot"]},
         r"eval.fine_tuned_prompting: \['cot'\] not in eval.prompting"),
        # ranges: a value of the right type that no run can use
        ("data", {"train_size": -5}, r"config key data.train_size: -5 is out of range; expected a value in \[1, inf\]"),
        ("data", {"rating_margin": -0.5}, r"data.rating_margin: -0.5 is out of range; expected a value in \[0, inf\]"),
        ("train", {"learning_rate": 0.0}, r"train.learning_rate: 0.0 is out of range; expected a value in \(0, inf\]"),
        ("train", {"learning_rate": -1e-4}, r"train.learning_rate: -0.0001 is out of range"),
        ("train", {"warmup_ratio": 1.5}, r"train.warmup_ratio: 1.5 is out of range; expected a value in \[0, 1\)"),
        ("train", {"batch_size": -8}, r"train.batch_size: -8 is out of range; expected a value in \[1, inf\]"),
        ("train", {"weight_decay": -0.1}, r"train.weight_decay: -0.1 is out of range"),
        ("train", {"epochs": 0.0}, r"train.epochs: 0.0 is out of range"),
        ("train", {"early_stopping_patience": 0}, r"train.early_stopping_patience: 0 is out of range"),
        ("strategy", {"lora": {"r": 0}}, r"config key strategy.lora.r: 0 is out of range"),
        ("strategy", {"lora": {"dropout": 1.0}}, r"strategy.lora.dropout: 1.0 is out of range; expected a value in \[0, 1\)"),
        ("eval", {"prompting": {"zero_shot": {"method": "zero_shot", "temperature": 0.0}}},
         r"eval.prompting.zero_shot.temperature: 0.0 is out of range"),
        ("eval", {"prompting": {"zero_shot": {"method": "zero_shot", "top_p": 1.5}}},
         r"eval.prompting.zero_shot.top_p: 1.5 is out of range"),
        ("eval", {"limit": 0}, r"eval.limit: 0 is out of range"),
        # a config value that reaches a shell command (dvc.yaml: ${train.launcher} stages/train.py)
        ("train", {"launcher": "python; touch x #"},
         r"config key train.launcher: 'python; touch x #' is not a launcher tunelab runs; it must start with one of "
         r"\['python', 'accelerate', 'torchrun'\]"),
        ("train", {"launcher": "python $(touch x)"}, r"train.launcher: .* is not a launcher tunelab runs"),
        ("train", {"launcher": "bash -c python"}, r"train.launcher: 'bash -c python' is not a launcher tunelab runs"),
        ("train", {"launcher": ""}, r"train.launcher: '' is not a launcher tunelab runs"),
        # the headline figure must be one the fine-tuned variants are scored with
        ("eval", {"headline": "zero_shot/rouge"}, r"eval.headline: 'zero_shot/rouge' is not a fine-tuned result; "
                                                  r"expected one of \['zero_shot/choice', 'zero_shot/generate'\]"),
        ("eval", {"headline": "few_shot/choice"}, r"eval.headline: 'few_shot/choice' is not a fine-tuned result"),
        ("eval", {"fine_tuned_prompting": []}, r"eval.fine_tuned_prompting: name at least one prompting method"),
        # renamed keys name their new name ("strategy" is the fine-tuning method only)
        ("eval", {"strategies": {}}, r"^config key eval.strategies: renamed to eval.prompting; rename it in conf/"),
        ("eval", {"fine_tuned_strategies": ["zero_shot"]}, r"config key eval.fine_tuned_strategies: renamed to "
                                                          r"eval.fine_tuned_prompting"),
    ],
)
def test_config_errors_name_the_key(section, change, message):
    composed = compose_conf(CONF)
    with pytest.raises(TunelabError, match=message):
        validate_config({**composed, section: merged(composed[section], change)})  # what the check stage runs


def merged(base: dict, change: dict) -> dict:
    """``change`` over ``base``, nested mappings merged key by key (as a -S override would)."""
    out = dict(base)
    for key, value in change.items():
        out[key] = merged(base[key], value) if isinstance(value, dict) and isinstance(base.get(key), dict) and value else value
    return out


def test_each_strategy_file_sets_its_own_learning_rate_and_overrides_win():
    assert compose_conf(CONF, ["strategy=full"])["train"]["learning_rate"] == 3e-5
    assert compose_conf(CONF, ["strategy=prompt_tuning"])["train"]["learning_rate"] == 3e-2
    assert compose_conf(CONF, ["strategy=full", "train.learning_rate=1e-4"])["train"]["learning_rate"] == 1e-4


def test_a_prompting_template_is_a_conf_prompt_file_and_can_be_swapped():
    composed = compose_conf(CONF)
    settings = to_section(EvalConfig, "eval", composed["eval"])
    assert list(settings.prompting)[:2] == ["zero_shot", "few_shot"]  # the order written in conf/eval
    assert settings.prompting["zero_shot"].template is None  # null: the training prompt
    assert settings.prompting["role"].template.name == "sentiment_role"
    swapped = compose_conf(CONF, ["prompt@eval.prompting.role.template=sentiment_cot"])
    assert swapped["eval"]["prompting"]["role"]["template"]["name"] == "sentiment_cot"
    with pytest.raises(TunelabError, match=r"^conf/: the defaults lists choose each other in a loop, e.g. a prompt file"):
        compose_conf(CONF, ["prompt@eval.prompting.role.template=sentiment_instruction"])  # it chooses role's template


def test_unknown_group_option_is_a_clear_error():
    with pytest.raises(TunelabError, match="conf/: .*strategy_that_does_not_exist"):
        compose_conf(CONF, ["model=strategy_that_does_not_exist"])


def test_stale_params_yaml_is_refused_outside_dvc_exp_run(tmp_path, monkeypatch):
    conf = tmp_path / "conf"
    shutil.copytree(CONF, conf)
    params = compose_conf(conf)
    check_params_current(params, conf)  # current: fine
    data_file = conf / "data" / "vader_movie_reviews.yaml"
    data_file.write_text(data_file.read_text().replace("test_size: 500", "test_size: 321"))
    monkeypatch.delenv("DVC_EXP_NAME", raising=False)
    with pytest.raises(TunelabError, match=r"first difference: data.test_size\). A bare `dvc repro`"):
        check_params_current(params, conf)
    monkeypatch.setenv("DVC_EXP_NAME", "some-exp")  # dvc exp run composed params.yaml itself
    check_params_current(params, conf)


def test_missing_params_yaml_says_how_to_make_it(tmp_path):
    with pytest.raises(TunelabError, match="composed from conf/ by `dvc exp run`"):
        read_params(tmp_path / "params.yaml")


def test_first_difference_walks_nested_keys():
    assert first_difference({"a": {"b": 1, "c": 2}}, {"a": {"b": 1, "c": 3}}) == "a.c"
    assert first_difference({"a": 1}, {"a": 1, "z": 0}) == "z"
    assert first_difference({"a": [1, 2]}, {"a": [1, 2]}) is None


@pytest.mark.parametrize("launcher", ["python", "accelerate launch --num_processes 2 --mixed_precision no",
                                      "torchrun --nproc_per_node=2", "python -X faulthandler"])
def test_launchers_people_use_are_accepted(launcher):
    assert to_section(TrainConfig, "train", {**compose_conf(CONF)["train"], "launcher": launcher}).launcher == launcher


def test_the_headline_defaults_to_the_first_fine_tuned_prompting_and_its_first_scoring():
    settings = compose_conf(CONF, ["eval.fine_tuned_prompting=[few_shot]"])["eval"]
    assert to_section(EvalConfig, "eval", settings).headline_result() == ("few_shot", "choice")
    chosen = to_section(EvalConfig, "eval", {**compose_conf(CONF)["eval"], "headline": "zero_shot/generate"})
    assert chosen.headline_result() == ("zero_shot", "generate")


def test_an_unknown_top_level_section_is_refused(tmp_path):
    composed = compose_conf(CONF)
    (tmp_path / "params.yaml").write_text(yaml.safe_dump({**composed, "traning": {"max_steps": 10}}))
    with pytest.raises(TunelabError, match=r"params.yaml: unknown section 'traning'; the sections are \['align', 'bench', "):
        read_params(tmp_path / "params.yaml", check_current=False)
    with pytest.raises(TunelabError, match=r"config: unknown section 'traning'"):
        validate_config({**composed, "traning": {}})


THREE_LABELS = {"data": {"labels": ["neg", "neu", "pos"]}}
LOCAL_DATA = ["data=local_file", "data.source.path=reviews.jsonl"]  # labelled by a field: any number of labels
THREE_CHOICES = {"name": "mine", "template": "{{ text }} ||| {{ answer_choices[label_index] }}",
                 "answer_choices": "neg ||| neu ||| pos"}


@pytest.mark.parametrize(("changes", "message"), [
    # a user's three labels with the shipped two-class templates: refused before any stage trains
    (THREE_LABELS, r"^prompt: template 'sentiment_instruction': answer_choices gives 2 choices \['negative', 'positive'\], "
                   r"but data.labels has 3 \['neg', 'neu', 'pos'\]: each label needs its choice; write a conf/prompt file "
                   r"whose answer_choices name your labels and pick it with -S prompt=NAME$"),
    ({**THREE_LABELS, "prompt": THREE_CHOICES},
     r"^eval.prompting.role.template: template 'sentiment_role': answer_choices gives 2 choices .*: each label needs its "
     r"choice; or set eval.prompting.role.template=null to derive it from the training prompt$"),
    ({"prompt": {**THREE_CHOICES, "answer_choices": None}}, r"^prompt: template 'mine': no answer_choices; scoring "
                                                            r"needs one choice per label in data.labels order, e.g. "
                                                            r"answer_choices: negative \|\|\| positive$"),
])
def test_templates_whose_answer_choices_do_not_fit_the_labels_are_refused_with_the_config(changes, message):
    composed = compose_conf(CONF, [*LOCAL_DATA, "prompt=sentiment_instruction"])  # a two-choice prompt, chosen
    with pytest.raises(TunelabError, match=message):
        validate_config({**composed, **{section: merged(composed[section], change) for section, change in changes.items()}})


def test_templates_that_fit_the_labels_or_choose_per_row_pass():
    composed = compose_conf(CONF, LOCAL_DATA)
    prompting = {name: {"template": None} for name in composed["eval"]["prompting"]}
    fitting = {"data": merged(composed["data"], THREE_LABELS["data"]), "prompt": THREE_CHOICES,
               "eval": merged(composed["eval"], {"prompting": prompting})}
    validate_config({**composed, **fitting})
    per_row = {**THREE_CHOICES, "answer_choices": "{{ choices }}"}  # depends on the row: checked when rendered
    validate_config({**composed, **fitting, "prompt": per_row})


def test_the_sentiment_prompt_brings_its_sibling_templates_and_any_other_prompt_derives_them():
    methods = ("role", "chain_of_thought", "self_consistency")
    default = compose_conf(CONF)
    assert list(default["eval"]["prompting"]) == ["zero_shot", "few_shot", *methods, "optimized"]  # eval/default.yaml's order
    assert [default["eval"]["prompting"][m]["template"]["name"] for m in methods] == \
        ["sentiment_role", "sentiment_cot", "sentiment_cot"]
    other = compose_conf(CONF, ["prompt=sentiment_role"])  # a prompt file that chooses no siblings, as a user's own
    assert [other["eval"]["prompting"][m].get("template") for m in methods] == [None, None, None]
    validate_config(other)


def test_each_shipped_task_chooses_its_prompt_and_eval_and_a_command_line_choice_wins():
    for data, task, prompt, zero_shot_tokens, steps in (("gsm8k", "math", "gsm8k", 192, 40),
                                                        ("squad_v1", "extractive_qa", "squad", 24, 40),
                                                        ("alpaca_demo", "generation", "instruction", 96, 50)):
        composed = compose_conf(CONF, [f"data={data}"])
        assert (composed["data"]["task"], composed["prompt"]["name"]) == (task, prompt)
        assert composed["eval"]["prompting"]["zero_shot"]["max_new_tokens"] == zero_shot_tokens
        assert composed["quantize"]["variants"] == ["merged", "int8_dynamic"] and composed["train"]["max_steps"] == steps
        assert {tuple(m["scoring"]) for m in composed["eval"]["prompting"].values()} == {("generate",)}
        validate_config(composed)
    assert compose_conf(CONF, ["data=gsm8k", "prompt=squad"])["prompt"]["name"] == "squad"
    assert compose_conf(CONF, ["data=gsm8k", "quantize=with_nf4"])["quantize"]["variants"][-1] == "nf4"
    assert compose_conf(CONF, ["data=gsm8k", "train.max_steps=100"])["train"]["max_steps"] == 100
    assert to_section(DataConfig, "data", compose_conf(CONF)["data"]).task == "classification"  # the default, as it was


GSM8K = ["data=gsm8k"]


@pytest.mark.parametrize(("overrides", "change", "message"), [
    (["data=gsm8k", "eval=default"], {}, r"^config key eval.prompting.zero_shot.scoring: choice needs answer choices, and "
                                         r"task math has none; use scoring: \['generate'\] \(e.g. -S eval=math"),
    (GSM8K, {"data": {"task": "summarise"}}, r"config key data.task: unknown value 'summarise'; expected one of "
                                             r"\['classification', 'generation', 'extractive_qa', 'math'\]"),
    (GSM8K, {"data": {"references_field": None}}, r"data: task math needs exactly one of data.layout .* and "
                                                  r"data.references_field"),
    (GSM8K, {"data": {"layout": "openai", "references_field": None}}, r"config key data.layout: unknown value 'openai'; "
                                                                       r"expected one of \['prompt_completion', 'alpaca'"),
    (GSM8K, {"data": {"labels": ["a", "b"]}}, r"config key data.labels: is for classification; task math rows are a prompt "
                                              r"and references"),
    (GSM8K, {"prompt": {"template": "Q: {{ question }}"}}, r"config key prompt.template: template 'gsm8k' has no '\|\|\|' "
                                                           r"target"),
    (GSM8K, {"prompt": {"use_chat_template": False}}, r"config key prompt.use_chat_template: task math renders chats"),
    ([], {"data": {"group_field": "title"}}, r"config key data.group_field: is for generative tasks"),
])
def test_a_generative_config_that_cannot_work_is_refused_naming_the_key(overrides, change, message):
    composed = compose_conf(CONF, overrides)
    with pytest.raises(TunelabError, match=message):
        validate_config({**composed, **{section: merged(composed[section], c) for section, c in change.items()}})


def dvc_params() -> set[str]:
    stages = yaml.safe_load((REPO_ROOT / "dvc.yaml").read_text())["stages"]
    return {name for stage in stages.values() for name in stage.get("params", []) if isinstance(name, str)}


@pytest.mark.parametrize("option", group_options())
def test_every_param_dvc_yaml_names_is_in_every_composition(option):
    """DVC refuses a run whose params.yaml lacks a param a stage names ("Parameters ... are missing"),
    so every conf choice must compose to every one of them, null where unused."""
    composed = compose_conf(CONF, [option, *REQUIRED_OVERRIDES.get(option, [])])
    for dotted in dvc_params():
        value = composed
        for key in dotted.split("."):
            assert isinstance(value, dict) and key in value, f"{option}: params.yaml would lack {dotted}"
            value = value[key]
