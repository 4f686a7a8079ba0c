"""Every extension point is one registry entry (plus a conf file where it is a conf choice): a fine-tuning
strategy, a deployment method, an alignment method, a reward, a raw format, a row layout, a task, a serving engine.

Each test registers a toy part the way its module would (the entry is all the code a new part
needs), writes its conf file into a copy of conf/, and shows every place that lists strategies
or methods picking it up: config validation, training, saving, loading, deploying.
"""

import dataclasses
import json
import shutil

import pytest
import torch
from conftest import REPO_ROOT
from training_helpers import formatted_rows, snapshot, tiny_train_config, train_tiny
from transformers import AutoTokenizer

from tunelab.config.compose import compose_conf
from tunelab.config.load import to_section
from tunelab.config.schema import QuantizeConfig, StrategyConfig
from tunelab.deploy.methods import METHODS, DeployMethod, cast, make_variant
from tunelab.errors import TunelabError
from tunelab.models.loading import load_deployed, load_trained, merged_model
from tunelab.paths import Paths
from tunelab.training.strategies import STRATEGIES, Strategy, save_trained, trainable_model
from tunelab.validation import validate_config


def train_only_norms(model, config, base_dir, gradient_checkpointing):
    """The toy strategy: only the RMSNorm scales learn (a few thousand parameters)."""
    for name, parameter in model.named_parameters():
        parameter.requires_grad = "norm" in name
    return model


@pytest.fixture
def toy_parts(tmp_path):
    """The registry entries a module would add, and the conf files; removed again afterwards."""
    STRATEGIES.register(Strategy("norms", (), adapt=train_only_norms, saves_adapter=False))
    METHODS.register(DeployMethod("bf16_cpu", cast("bfloat16"), "cast"))
    conf = shutil.copytree(REPO_ROOT / "conf", tmp_path / "conf")
    (conf / "strategy/norms.yaml").write_text("# @package _global_\n# dvc exp run -S strategy=norms\nstrategy:\n  name: norms\n"
                                              "train:\n  learning_rate: 1.0e-2\n")
    (conf / "quantize/with_bf16_cpu.yaml").write_text(
        "# dvc exp run -S quantize=with_bf16_cpu\nvariants: [merged, bf16_cpu]\nint8_dynamic_keep_float: [lm_head]\n"
        "wanda_sparsity: 0.5\nwanda_calibration_rows: 8\n")
    yield compose_conf(conf, ["strategy=norms", "quantize=with_bf16_cpu"])
    STRATEGIES.unregister("norms")
    METHODS.unregister("bf16_cpu")


def test_a_new_strategy_is_one_registry_entry_and_one_conf_file(toy_parts, tiny_model_dir, tmp_path):
    validate_config(toy_parts)  # the check stage accepts it
    config = to_section(StrategyConfig, "strategy", toy_parts["strategy"])
    model = trainable_model(tiny_model_dir, config)
    assert {n for n, p in model.named_parameters() if p.requires_grad} == {
        n for n, _ in model.named_parameters() if "norm" in n}
    before = snapshot(model)
    tokenizer = AutoTokenizer.from_pretrained(tiny_model_dir)
    trainer, _ = train_tiny(tiny_model_dir, tmp_path / "ckpt", config, formatted_rows(tokenizer),
                            tiny_train_config(learning_rate=toy_parts["train"]["learning_rate"], max_steps=4))
    trainer.train()
    changed = {n for n, p in trainer.model.named_parameters() if not torch.equal(p.detach(), before[n])}
    assert changed and all("norm" in n for n in changed)
    save_trained(trainer.model, tokenizer, config, tmp_path / "trained")
    reloaded = load_trained(tmp_path / "trained", tiny_model_dir)
    ids = torch.tensor([[1, 5, 9, 20]])
    with torch.no_grad():
        assert torch.equal(reloaded(input_ids=ids).logits, trainer.model.eval()(input_ids=ids).logits)


def test_a_new_deployment_method_is_one_registry_entry_and_one_conf_file(toy_parts, tiny_model_dir, tmp_path):
    validate_config(toy_parts)
    assert to_section(QuantizeConfig, "quantize", toy_parts["quantize"]).variants == ["merged", "bf16_cpu"]
    config = to_section(StrategyConfig, "strategy", compose_conf(REPO_ROOT / "conf", ["strategy=full"])["strategy"])
    tokenizer = AutoTokenizer.from_pretrained(tiny_model_dir)
    save_trained(trainable_model(tiny_model_dir, config), tokenizer, config, tmp_path / "trained")
    merged_model(tmp_path / "trained", tiny_model_dir).save_pretrained(tmp_path / "merged")
    make_variant("bf16_cpu", tmp_path / "merged", tmp_path / "trained", tmp_path / "bf16_cpu", tokenizer,
                 to_section(QuantizeConfig, "quantize", toy_parts["quantize"]), Paths(tmp_path))
    model = load_deployed(tmp_path / "bf16_cpu")  # a fresh process would load it the same way: by its recipe
    assert {p.dtype for p in model.parameters()} == {torch.bfloat16}


def test_an_unregistered_name_is_refused_naming_the_registered_ones(toy_parts):
    with pytest.raises(TunelabError, match=r"config key strategy.name: unknown value 'dpo'; expected one of \[.*'norms'\]"):
        validate_config({**toy_parts, "strategy": {"name": "dpo"}})
    with pytest.raises(TunelabError, match=r"config key quantize.variants: unknown value 'gguf'; .*'bf16_cpu'\]"):
        validate_config({**toy_parts, "quantize": {**toy_parts["quantize"], "variants": ["gguf"]}})


def test_a_new_reward_and_a_new_alignment_method_are_one_registry_entry_each_and_one_conf_file(tiny_model_dir,
                                                                                               tmp_path):
    """A brevity reward (rewards.py) and a GRPO variant with its own defaults (methods.py), selected by one
    conf/align file: the check stage accepts both, and the trainer is built with the new reward."""
    from tunelab.alignment.methods import ALIGN_METHODS, PROMPTS, AlignMethod, sampling_options
    from tunelab.alignment.preferences import alignment_rows
    from tunelab.alignment.rewards import REWARDS, Reward
    from tunelab.alignment.run import build_align_trainer
    from tunelab.config.schema import AlignConfig
    from tunelab.evaluation.tasks import TASKS

    def grpo():
        from trl import GRPOConfig, GRPOTrainer

        return GRPOTrainer, GRPOConfig

    REWARDS.register(Reward("brevity", lambda task, completion, row: 1.0 / (1 + len(completion.text.split()))))
    ALIGN_METHODS.register(AlignMethod("grpo_dr", PROMPTS, grpo,
                                       lambda config: {**sampling_options(config), "loss_type": "dr_grpo"}, ("loss",)))
    try:
        conf = shutil.copytree(REPO_ROOT / "conf", tmp_path / "conf")
        (conf / "align/grpo_dr.yaml").write_text("# dvc exp run -S align=grpo_dr\ndefaults:\n  - none\n  - _self_\n"
                                                 "method: grpo_dr\nrewards:\n  correct: 1.0\n  brevity: 0.5\n")
        composed = compose_conf(conf, ["align=grpo_dr", "align.max_steps=1", "align.max_completion_length=4"])
        validate_config(composed)
        align = to_section(AlignConfig, "align", composed["align"])
        tokenizer = AutoTokenizer.from_pretrained(tiny_model_dir)
        from transformers import AutoModelForCausalLM

        trainer = build_align_trainer(ALIGN_METHODS["grpo_dr"], align, AutoModelForCausalLM.from_pretrained(tiny_model_dir),
                                      tokenizer, TASKS["classification"], [],
                                      alignment_rows(formatted_rows(tokenizer), tokenizer), tmp_path / "out", [])
        assert [f.__name__ for f in trainer.reward_funcs] == ["correct", "brevity"]
        assert trainer.args.loss_type == "dr_grpo" and list(trainer.args.reward_weights) == [1.0, 0.5]
    finally:
        REWARDS.unregister("brevity")
        ALIGN_METHODS.unregister("grpo_dr")


def test_a_new_raw_format_is_one_reader_entry(tmp_path):
    """A pipe-separated file (readers.py's READERS): the check accepts data.format=psv, prepare's
    reading and cleaning take its records, each named by file and line."""
    from tunelab.config.schema import DataConfig
    from tunelab.data.cleaning import clean
    from tunelab.data.readers import READERS, RawRecord, Reader, read_records

    def read_psv(path):
        lines = path.read_text().splitlines()
        names = lines[0].split("|")
        for number, line in enumerate(lines[1:], start=2):
            yield RawRecord(dict(zip(names, line.split("|"), strict=True)), f"{path}:{number}")

    READERS.register(Reader("psv", read_psv))
    try:
        composed = compose_conf(REPO_ROOT / "conf", ["data=local_file", "data.source.path=r.psv", "data.format=psv"])
        validate_config(composed)
        (tmp_path / "r.psv").write_text("text|label\na fine film|positive\na dull film|negative\n")
        records = read_records(tmp_path, "r.psv", "psv")
        assert records[1].where.endswith("r.psv:3")
        examples, _ = clean(records, to_section(DataConfig, "data", composed["data"]))
        assert [(e["text"], e["label"]) for e in examples] == [("a fine film", "positive"), ("a dull film", "negative")]
    finally:
        READERS.unregister("psv")


def test_a_new_row_layout_is_one_layout_entry(tmp_path):
    """Question/answer rows (layouts.py's LAYOUTS): prepare's cleaning makes them a chat prompt and
    its references, as it does every shipped layout."""
    from tunelab.config.schema import DataConfig
    from tunelab.data.cleaning import clean
    from tunelab.data.layouts import LAYOUTS, Layout, references_of, text_value
    from tunelab.data.readers import RawRecord

    def read_qa(values, where, roles):
        references = references_of(values["answer"], "answer", where)
        return [{"role": "user", "content": text_value(values, "question", where)},
                {"role": "assistant", "content": references[0]}], references

    LAYOUTS.register(Layout("qa", ("question", "answer"), (), read_qa))
    try:
        composed = compose_conf(REPO_ROOT / "conf", ["data=local_chat", "data.source.path=qa.jsonl", "data.layout=qa"])
        validate_config(composed)
        records = [RawRecord({"question": "2+2?", "answer": "4"}, "qa.jsonl:1"),
                   RawRecord({"question": "3+3?", "answer": ["6", "six"]}, "qa.jsonl:2")]
        examples, _ = clean(records, to_section(DataConfig, "data", composed["data"]))
        assert [e["references"] for e in examples] == [["4"], ["6", "six"]]
        assert "2+2?" in json.dumps(examples[0])
    finally:
        LAYOUTS.unregister("qa")


def test_a_new_task_is_one_task_entry():
    """A yes/no task (tasks.py's TASKS): the check accepts data.task=yes_no, and its own answer reader,
    scorer and report turn generated text into its headline."""
    from tunelab.evaluation.tasks import TASKS, Task, answer_of
    from tunelab.evaluation.text_metrics import proportion_with_interval

    def yes_or_no(text: str) -> str | None:
        return next((word for word in text.lower().replace(",", " ").split() if word in ("yes", "no")), None)

    def report(references: list[list[str]], answers: list[str | None], seed: int) -> dict:
        return proportion_with_interval("accuracy", [float(a in r) for r, a in zip(references, answers, strict=True)])

    TASKS.register(Task("yes_no", "accuracy", ("generate",), read_answer=yes_or_no, report=report,
                        table_metrics=("accuracy",)))
    try:
        composed = compose_conf(REPO_ROOT / "conf", ["data=local_chat", "data.source.path=qa.jsonl", "data.task=yes_no"])
        validate_config(composed)
        task = TASKS["yes_no"]
        answers = [answer_of(task, text, choices=[]) for text in ("Yes, it is.", "I think no", "maybe")]
        assert answers == ["yes", "no", None]
        assert task.report([["yes"], ["yes"], ["no"]], answers, 0)["accuracy"] == pytest.approx(1 / 3)
    finally:
        TASKS.unregister("yes_no")


def test_a_new_serving_engine_is_one_engine_entry(tiny_model_dir, tmp_path):
    """A serving engine (engines.py's ENGINES): serve.engine=single is accepted and chosen, and the
    server its command starts answers the openai client, as the load_test stage would use it."""
    import openai
    from served import serve_settings

    from tunelab.serving.engines import ENGINES, Engine, Served, Server, transformers_command

    def single_command(served, settings):  # transformers serve, one request at a time
        return transformers_command(served, dataclasses.replace(settings, max_concurrency=1))

    ENGINES.register(Engine("single", single_command, lambda served, settings: None))
    try:
        validate_config(compose_conf(REPO_ROOT / "conf", ["serve.engine=single"]))
        settings = serve_settings(engine="single")
        engine = ENGINES[settings.engine]  # as choose() picks a named engine
        base_url = f"http://127.0.0.1:{settings.port}/v1"
        with Server(engine.command(Served("tiny", tiny_model_dir), settings), base_url, tmp_path / "server.log"):
            client = openai.OpenAI(base_url=base_url, api_key="-", max_retries=0, timeout=60)
            assert [model.id for model in client.models.list().data] == ["tiny"]
            answer = client.chat.completions.create(model="tiny", messages=[{"role": "user", "content": "hi"}],
                                                    max_tokens=2, temperature=0.0)
            assert answer.usage.completion_tokens == 2
    finally:
        ENGINES.unregister("single")
