"""Alignment after fine-tuning: rewards on hand-made completions, the preference pairs, and each
TRL method training the tiny model a few steps (finite loss, only the new adapter learns, the
reference stays the SFT model)."""

import math
import os
from dataclasses import replace

import pytest
import torch
from configs import conf_section
from conftest import REPO_ROOT
from training_helpers import formatted_rows

from tunelab.alignment.methods import ALIGN_METHODS, NONE, PROMPTS
from tunelab.alignment.preferences import (
    alignment_rows,
    check_no_test_rows,
    check_preference_rows,
    is_unpaired,
    pairs_from_samples,
    pairs_from_task,
    preference_fingerprint,
    rows_from_file,
    unpaired,
)
from tunelab.alignment.rewards import REWARDS, Completion, Reward, check_rewards, reward_functions
from tunelab.alignment.run import build_align_trainer, trl_config
from tunelab.config.compose import compose_conf
from tunelab.errors import TunelabError
from tunelab.evaluation.tasks import TASKS
from tunelab.io.atomic import write_jsonl
from tunelab.io.files import sha256_of
from tunelab.validation import validate_config

CLASSIFY = {"references": ["positive"], "choices": ["negative", "positive"]}
MATH = {"references": ["She has 3 + 4 = 7 apples.\n#### 7"], "choices": []}
SQUAD = {"references": ["Denver Broncos", "the Broncos"], "choices": []}


def reward(name: str, task: str, text: str, row: dict, tokens: int = 4, budget: int = 16) -> float:
    return REWARDS[name].score(TASKS[task], Completion(text, tokens, budget), row)


@pytest.mark.parametrize("task, text, row, correct, format_", [
    ("classification", "positive", CLASSIFY, 1.0, 2 / 3),
    ("classification", "Answer: positive", CLASSIFY, 1.0, 1.0),
    ("classification", "negative", CLASSIFY, 0.0, 2 / 3),
    ("classification", "I cannot tell.", CLASSIFY, 0.0, 0.0),
    ("classification", "It is positive, not negative. Answer: negative", CLASSIFY, 0.0, 2 / 3),  # the marker decides
    ("classification", "Not negative at all.\nAnswer: positive", CLASSIFY, 1.0, 1.0),  # the marker is a line's start
    ("math", "3 + 4 = 7\nAnswer: 7", MATH, 1.0, 1.0),
    ("math", "She has 7.0 apples", MATH, 1.0, 2 / 3),  # 7.0 = 7
    ("math", "3 + 4 = 8", MATH, 0.0, 2 / 3),
    ("math", "seven", MATH, 0.0, 0.0),
    ("extractive_qa", "Denver Broncos", SQUAD, 1.0, 2 / 3),
    ("extractive_qa", "The Denver Broncos won.", SQUAD, 0.8, 2 / 3),  # token F1 against "Denver Broncos": 2·(2/3·1)/(5/3)
    ("extractive_qa", "Carolina Panthers", SQUAD, 0.0, 2 / 3),
    ("extractive_qa", "   ", SQUAD, 0.0, 0.0),
])
def test_rewards_on_a_table_of_completions(task, text, row, correct, format_):
    assert reward("correct", task, text, row) == pytest.approx(correct)
    assert reward("format", task, text, row) == pytest.approx(format_)


def test_the_length_penalty_is_the_share_of_the_budget_used():
    assert [reward("length", "classification", "x", CLASSIFY, tokens=n, budget=16) for n in (0, 4, 16)] == [0, -0.25, -1]


def test_generation_is_rewarded_by_rouge_l_with_partial_credit():
    row = {"references": ["the cat sat on the mat"], "choices": []}
    scores = [reward("correct", "generation", text, row) for text in
              ("the cat sat on the mat", "the cat sat", "a dog ran")]
    assert scores[0] == pytest.approx(1.0) and 0 < scores[1] < 1 and scores[2] == 0.0
    assert scores[1] == pytest.approx(2 * (3 / 3) * (3 / 6) / (1 + 3 / 6))  # LCS 3: precision 1, recall 1/2


def test_trl_reward_functions_score_a_batch_as_trl_calls_them():
    functions, weights = reward_functions({"correct": 1.0, "length": 0.5}, TASKS["classification"], budget=8)
    assert [f.__name__ for f in functions] == ["correct", "length"] and weights == [1.0, 0.5]
    batch = {"prompts": ["p", "p"], "completions": ["positive", "negative"], "completion_ids": [[1, 2], [1, 2, 3, 4]],
             "references": [["positive"], ["positive"]], "choices": [["negative", "positive"]] * 2}
    assert functions[0](**batch) == [1.0, 0.0]
    assert functions[1](**batch) == [-0.25, -0.5]


def test_a_reward_that_returns_the_wrong_number_of_values_is_refused_before_training():
    broken = Reward("broken", lambda task, completion, row: 1.0)
    rows = [{"prompt": "p", "target": "positive", **CLASSIFY}] * 2
    functions, _ = reward_functions({"correct": 1.0}, TASKS["classification"], budget=8)
    check_rewards(functions, rows)  # a good one passes

    def one_value(**batch):
        return [1.0]

    one_value.__name__ = broken.name
    with pytest.raises(TunelabError, match=r"align.rewards.broken: returned 1 values for 2 completions"):
        check_rewards([one_value], rows)


def test_unknown_reward_and_method_names_are_refused_by_the_check_stage_naming_the_key():
    composed = compose_conf(REPO_ROOT / "conf", ["align=grpo"])
    composed["align"]["rewards"] = {"correct": 1.0, "brevity": 0.1}
    with pytest.raises(TunelabError, match=r"align.rewards: unknown value 'brevity'; expected one of \['correct', "):
        validate_config(composed)
    composed["align"]["method"] = "ppo"
    with pytest.raises(TunelabError, match=r"align.method: unknown value 'ppo'; expected one of \['none', 'dpo'"):
        validate_config(composed)


def test_pairs_put_the_gold_answer_against_each_distinct_wrong_sample():
    row = {"id": "7", "prompt": "Review: fine\nSentiment?", "answer": "positive<|im_end|>", **CLASSIFY}
    settings = conf_section("align", ("align=dpo",)).preferences
    samples = ["positive", "negative", "negative", "Negative", "unsure", "positive"]
    pairs = pairs_from_samples(TASKS["classification"], row, samples, settings, "<|im_end|>")
    assert pairs == [{"id": "7", "prompt": row["prompt"], "chosen": "positive<|im_end|>", "rejected": "negative<|im_end|>"}]
    more = pairs_from_samples(TASKS["classification"], row, samples, conf_section(
        "align", ("align=dpo", "align.preferences.pairs_per_prompt=5")).preferences, "<|im_end|>")
    assert [p["rejected"] for p in more] == ["negative<|im_end|>", "Negative<|im_end|>", "unsure<|im_end|>"]
    assert pairs_from_samples(TASKS["classification"], row, ["positive", "Positive."], settings, "<|im_end|>") == []


def test_kto_sees_each_pair_as_a_desirable_and_an_undesirable_answer():
    pairs = [{"prompt": f"p{i}", "chosen": f"good{i}", "rejected": f"bad{i}"} for i in range(3)]
    rows = unpaired(pairs)
    assert sorted((r["prompt"], r["completion"], r["label"]) for r in rows) == sorted(
        [(f"p{i}", f"good{i}", True) for i in range(3)] + [(f"p{i}", f"bad{i}", False) for i in range(3)])


def test_pairs_that_teach_nothing_or_come_from_test_rows_are_refused(tiny_tokenizer, tmp_path):
    good = {"id": "1", "prompt": "p", "chosen": "a", "rejected": "b"}
    check_preference_rows([good], "pairs.jsonl")
    with pytest.raises(TunelabError, match=r"pairs.jsonl:2: chosen equals rejected"):
        check_preference_rows([good, {**good, "rejected": "a"}], "pairs.jsonl")
    with pytest.raises(TunelabError, match=r"pairs.jsonl: no preference pairs"):
        check_preference_rows([], "pairs.jsonl")
    rows = formatted_rows(tiny_tokenizer)
    train, test = rows[:6], rows[6:]
    pairs = [{"id": f"x{i}", "prompt": r["prompt"], "chosen": "a", "rejected": "b"} for i, r in enumerate(train)]
    check_no_test_rows(pairs, test, tiny_tokenizer)
    leaked = {"id": "new", "prompt": alignment_rows(test, tiny_tokenizer)[0]["prompt"], "chosen": "a", "rejected": "b"}
    with pytest.raises(TunelabError, match=r"preference pair new: its prompt is a test row's"):
        check_no_test_rows([*pairs, leaked], test, tiny_tokenizer)
    path = tmp_path / "pairs.jsonl"
    write_jsonl(path, [{"prompt": "p", "better": "a", "rejected": "b"}])
    assert rows_from_file(path, {"chosen": "better"})[0] == [{"prompt": "p", "chosen": "a", "rejected": "b",
                                                             "id": "pairs.jsonl:1"}]
    write_jsonl(path, [{"prompt": "p", "better": "a", "rejected": "b"}, {"prompt": "q", "rejected": "b"}])
    with pytest.raises(TunelabError, match=r"pairs.jsonl:2: missing field 'better'"):
        rows_from_file(path, {"chosen": "better"})
    write_jsonl(path, [{"question": "p", "answer": "a"}])
    with pytest.raises(TunelabError, match=r"pairs.jsonl:1: neither a pair \(prompt, chosen, rejected\) nor an "
                                           r"unpaired row \(prompt, completion, label\)"):
        rows_from_file(path, {})


def test_kto_reads_a_file_of_unpaired_rows_as_they_are_and_refuses_rows_it_cannot_weigh(tmp_path):
    path = tmp_path / "rated.jsonl"
    write_jsonl(path, [{"prompt": "p", "answer": "good", "label": True, "id": 7},
                       {"prompt": "q", "answer": "bad", "label": False}])
    rows, stats = rows_from_file(path, {"completion": "answer"})
    assert rows == [{"prompt": "p", "completion": "good", "label": True, "id": "7"},
                    {"prompt": "q", "completion": "bad", "label": False, "id": "rated.jsonl:2"}]
    assert stats == {"source": "file", "path": str(path), "unpaired": 2} and is_unpaired(rows)
    check_preference_rows(rows, "rated.jsonl")
    assert unpaired(rows) == [{"prompt": "p", "completion": "good", "label": True},
                              {"prompt": "q", "completion": "bad", "label": False}], "taken as they are, not split"
    with pytest.raises(TunelabError, match=r"rated.jsonl:2: label must be true \(desirable\) or false, not 'no'"):
        check_preference_rows([rows[0], {**rows[1], "label": "no"}], "rated.jsonl")
    with pytest.raises(TunelabError, match=r"rated.jsonl:2: empty 'completion'"):
        check_preference_rows([rows[0], {**rows[1], "completion": ""}], "rated.jsonl")
    with pytest.raises(TunelabError, match=r"rated.jsonl: every row is labelled True; KTO needs desirable and undesirable"):
        check_preference_rows([rows[0], {**rows[1], "label": True}], "rated.jsonl")


def test_a_preference_file_is_fingerprinted_so_editing_it_reruns_the_preferences_stage(tmp_path):
    settings = conf_section("align", ("align=dpo",)).preferences
    assert preference_fingerprint(settings) == {"source": "task"}
    path = tmp_path / "pairs.jsonl"
    write_jsonl(path, [{"prompt": "p", "chosen": "a", "rejected": "b"}])
    from_file = replace(settings, source="file", path=str(path))
    before = preference_fingerprint(from_file)
    assert before == {"source": "file", "path": str(path), "sha256": sha256_of(path)}
    write_jsonl(path, [{"prompt": "p", "chosen": "a", "rejected": "c"}])
    assert preference_fingerprint(from_file)["sha256"] != before["sha256"]
    with pytest.raises(TunelabError, match=r"align.preferences.path: no file at .*missing.jsonl"):
        preference_fingerprint(replace(settings, source="file", path=str(tmp_path / "missing.jsonl")))


# --- the trainers, on the tiny model ---------------------------------------------------------


@pytest.fixture
def sft_model(tiny_model_dir):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    torch.set_num_threads(int(os.environ.get("OMP_NUM_THREADS", "1")))
    return AutoModelForCausalLM.from_pretrained(tiny_model_dir), AutoTokenizer.from_pretrained(tiny_model_dir)


def tiny_align(method: str, **changes):
    tiny = {"max_steps": 3, "batch_size": 4, "learning_rate": 1e-2, "logging_steps": 1, "save_steps": 100,
            "max_length": 64, "max_completion_length": 6}
    return conf_section("align", (f"align={method}",), **{**tiny, **changes})


def test_trl_configs_take_tunelabs_precision_and_checkpointing_never_trls_defaults(tmp_path):
    for method in ALIGN_METHODS:
        if method.name == NONE:
            continue
        args = trl_config(method, tiny_align(method.name), tmp_path)
        assert (args.bf16, args.fp16, args.gradient_checkpointing, args.activation_checkpointing) == (False,) * 4, \
            method.name
        assert args.use_cpu and args.max_steps == 3 and args.report_to == [], method.name


@pytest.mark.parametrize("name", [m.name for m in ALIGN_METHODS if m.name != NONE])
def test_each_method_trains_only_its_new_adapter_against_the_frozen_sft_model(name, sft_model, tmp_path):
    model, tokenizer = sft_model
    method, align = ALIGN_METHODS[name], tiny_align(name)
    rows = alignment_rows(formatted_rows(tokenizer), tokenizer)
    pairs = [{"id": r["id"], "prompt": r["prompt"], "chosen": r["answer"],
              "rejected": ("negative" if r["target"] == "positive" else "positive") + tokenizer.eos_token} for r in rows]
    probe = tokenizer(rows[0]["prompt"], return_tensors="pt")
    with torch.no_grad():
        sft_logits = model(**probe).logits
    before = {k: v.clone() for k, v in model.state_dict().items()}
    trainer = build_align_trainer(method, align, model, tokenizer, TASKS["classification"], pairs, rows, tmp_path, [])
    trainer.train()

    losses = [row["loss"] for row in trainer.state.log_history if "loss" in row]
    assert losses and all(math.isfinite(loss) for loss in losses)
    assert trainer.state.global_step == 3
    trained = trainer.model
    changed = {n for n, p in trained.named_parameters()
               if "lora_" in n and not torch.equal(p.detach(), torch.zeros_like(p)) and "lora_B" in n}
    assert changed, "the LoRA B matrices start at zero and must have learned"
    for name_, value in trained.get_base_model().state_dict().items():  # the SFT weights under the adapter
        plain = name_.replace(".base_layer", "")
        if "lora_" not in name_:
            assert torch.equal(value, before[plain]), f"{name_} changed: only the new adapter may learn"
    with torch.no_grad(), trained.disable_adapter():  # the reference TRL uses: the SFT model itself
        assert torch.allclose(trained(**probe).logits, sft_logits, atol=1e-5)
    with torch.no_grad():
        adapted = trained(**probe).logits
    assert not torch.allclose(adapted, sft_logits, atol=1e-5), "the adapter changed nothing"
    if method.data == PROMPTS:
        assert "reward" in trainer.state.log_history[0] and "frac_reward_zero_std" in trainer.state.log_history[0]
    else:
        assert "rewards/margins" in trainer.state.log_history[0]


def test_kto_trains_on_a_files_unpaired_rows(sft_model, tmp_path):
    """Rows labelled desirable or not (a file's, not split from pairs), of unequal counts as real ratings are."""
    model, tokenizer = sft_model
    rows = alignment_rows(formatted_rows(tokenizer), tokenizer)
    rated = [{"id": r["id"], "prompt": r["prompt"], "completion": r["answer"], "label": i % 3 != 0}
             for i, r in enumerate(rows)]
    trainer = build_align_trainer(ALIGN_METHODS["kto"], tiny_align("kto", max_steps=2), model, tokenizer,
                                  TASKS["classification"], rated, [], tmp_path, [])
    assert len(trainer.train_dataset) == len(rated), "each row once: unpaired rows are not split again"
    trainer.train()
    losses = [row["loss"] for row in trainer.state.log_history if "loss" in row]
    assert trainer.state.global_step == 2 and losses and all(math.isfinite(loss) for loss in losses)


def test_pairs_from_the_task_sample_the_sft_model_and_count_the_prompts_it_always_gets_right(sft_model):
    model, tokenizer = sft_model
    rows = alignment_rows(formatted_rows(tokenizer), tokenizer)
    settings = conf_section("align", ("align=dpo", "align.preferences.samples=3", "align.preferences.prompts=5",
                                      "align.preferences.max_new_tokens=3")).preferences
    pairs, stats = pairs_from_task(model, tokenizer, TASKS["classification"], rows, settings, seed=0)
    again, _ = pairs_from_task(model, tokenizer, TASKS["classification"], rows, settings, seed=0)
    assert pairs == again, "seeded: the same pairs every run"
    assert stats["prompts"] == 5 and stats["pairs"] == len(pairs)
    assert stats["prompts_always_right"] == 5 - len({p["id"] for p in pairs})
    by_id = {r["id"]: r for r in rows}
    for pair in pairs:  # the random tiny model never names the right label: every sample is wrong
        assert pair["chosen"] == by_id[pair["id"]]["answer"] and pair["rejected"] != pair["chosen"]
        assert pair["rejected"].endswith(tokenizer.eos_token)
    assert {p["id"] for p in pairs} <= {r["id"] for r in rows[:5]}


def test_align_none_is_the_default_and_every_method_composes_and_validates():
    assert compose_conf(REPO_ROOT / "conf")["align"]["method"] == NONE
    for method in ALIGN_METHODS:
        composed = compose_conf(REPO_ROOT / "conf", [f"align={method.name}"])
        validate_config(composed)
        assert composed["align"]["method"] == method.name
