"""Batched generation (with and without the shared-prefix cache) and the self-consistency vote."""

from dataclasses import replace

import pytest
import torch
from transformers import AutoModelForCausalLM, AutoTokenizer

from tunelab.config.schema import PromptingConfig
from tunelab.evaluation.evaluator import EvalSettings, evaluate_prompting
from tunelab.evaluation.generation import Sampling, generate, generate_and_score, majority_vote
from tunelab.evaluation.prompting import EvalPrompt
from tunelab.evaluation.scoring import SharedPrefix, choice_logprobs, common_prefix_length

CHOICES = ["negative", "positive"]


@pytest.mark.parametrize(
    ("answers", "winner", "share"),
    [
        (["positive", "negative", "positive"], "positive", 2 / 3),
        (["negative", None, None, "negative", "positive"], "negative", 2 / 5),  # unparseable paths count in the share
        (["positive", "negative"], "negative", 1 / 2),  # a tie goes to the choice listed first
        ([None, None], None, 0.0),
    ],
)
def test_majority_vote(answers, winner, share):
    assert majority_vote(answers, CHOICES) == (winner, pytest.approx(share))


@pytest.fixture(scope="module")
def model_and_tokenizer(tiny_model_dir):
    return AutoModelForCausalLM.from_pretrained(tiny_model_dir).eval(), AutoTokenizer.from_pretrained(tiny_model_dir)


def test_batched_left_padded_generation_equals_one_row_at_a_time(model_and_tokenizer):
    model, tokenizer = model_and_tokenizer
    rows = [tokenizer(text)["input_ids"] for text in ("Review: a moving film\nSentiment:", "dull", "x y z w v")]
    batched = generate(model, tokenizer, rows, max_new_tokens=6)
    assert batched == [generate(model, tokenizer, [row], max_new_tokens=6)[0] for row in rows]
    assert all(len(texts) == 1 for texts in batched)


def test_a_shared_prefix_cache_changes_nothing_greedy_or_sampled(model_and_tokenizer):
    model, tokenizer = model_and_tokenizer
    prefix = tokenizer("Review: funny\nSentiment: positive\n")["input_ids"]
    rows = [tokenizer(text, add_special_tokens=False)["input_ids"] for text in ("Review: a moving film\nSentiment:", "dull")]
    shared = SharedPrefix(model, prefix)
    assert generate(model, tokenizer, rows, 6, prefix=shared) == generate(model, tokenizer, [prefix + r for r in rows], 6)
    sampling = Sampling(samples=3, temperature=0.7, top_k=40, top_p=0.95)
    torch.manual_seed(0)
    sampled = generate(model, tokenizer, rows, 6, sampling, prefix=shared)  # prefix and prompts run once
    torch.manual_seed(0)
    plain = generate(model, tokenizer, [prefix + r for r in rows], 6, sampling, prompt_once=False)
    assert sampled == plain and all(len(texts) == 3 for texts in sampled)
    assert len({text for texts in sampled for text in texts}) > 1  # sampling, not greedy


@pytest.mark.parametrize("with_prefix", [False, True])
def test_greedy_generation_scores_the_choices_from_its_own_prompt_pass(model_and_tokenizer, with_prefix):
    """Choice scoring and greedy generation read the same prompt: one pass gives both, equal to each alone."""
    model, tokenizer = model_and_tokenizer
    rows = [tokenizer(text, add_special_tokens=False)["input_ids"]
            for text in ("Review: a moving film\nSentiment:", "dull", "x y z")]
    choices = [tokenizer(text, add_special_tokens=False)["input_ids"]
               for text in (" negative<|im_end|>", " positive", " meh")]
    assert len({len(choice) for choice in choices}) > 1  # a multi-token choice continues the prompt's cache
    prefix = SharedPrefix(model, tokenizer("Review: funny\nSentiment: positive\n")["input_ids"]) if with_prefix else None
    texts, scores = generate_and_score(model, tokenizer, rows, 6, choices, prefix=prefix)
    assert texts == generate(model, tokenizer, rows, 6, prefix=prefix)
    assert torch.allclose(scores, choice_logprobs(model, rows, choices, tokenizer.pad_token_id, prefix), atol=1e-4)
    normalized = generate_and_score(model, tokenizer, rows, 6, choices, prefix=prefix, normalize=True)[1]
    assert torch.allclose(normalized, scores / torch.tensor([float(len(c)) for c in choices]), atol=1e-5)


def test_choice_and_generate_scoring_of_one_prompting_run_the_prompts_once(model_and_tokenizer):
    """Counted as the model's forward calls that start where the prompts' shared prefix ends: each batch's
    prompts once, no second pass over them for choice scoring (decoding steps and choice tails start later)."""
    model, tokenizer = model_and_tokenizer
    reviews = [("a moving film", "positive"), ("dull", "negative"), ("x y z", "negative")]
    prompts = [EvalPrompt(id=str(i), label=label, text=f"Review: {text}\nSentiment:", choices=["negative", "positive"])
               for i, (text, label) in enumerate(reviews)]
    prompting = PromptingConfig(method="zero_shot", scoring=["choice", "generate"], max_new_tokens=4)
    settings = EvalSettings(batch_size=2, length_normalize=False, seed=0)
    shared = common_prefix_length([tokenizer(p.text)["input_ids"] for p in prompts])
    passes = []

    def count_prompt_passes(module, args, kwargs):
        cache = kwargs.get("past_key_values")
        passes.append((0 if cache is None else cache.get_seq_length()) == shared)

    hook = model.register_forward_pre_hook(count_prompt_passes, with_kwargs=True)
    try:
        both = evaluate_prompting(model, tokenizer, prompts, prompting, "t", False, ["negative", "positive"], settings, "t")
    finally:
        hook.remove()
    assert sum(passes) == 2  # two batches of prompts, each run once
    alone = {scoring: evaluate_prompting(model, tokenizer, prompts, replace(prompting, scoring=[scoring]), "t", False,
                                         ["negative", "positive"], settings, "t") for scoring in ("choice", "generate")}
    for scoring, key in (("choice", "prediction"), ("generate", "prediction"), ("generate", "texts")):
        assert [p[scoring][key] for p in both.predictions] == [p[scoring][key] for p in alone[scoring].predictions]
    for fused, single in zip(both.predictions, alone["choice"].predictions):
        assert fused["choice"]["logprobs"] == pytest.approx(single["choice"]["logprobs"], abs=2e-4)


@pytest.mark.parametrize(("method", "samples", "prompt_passes"), [
    ("zero_shot", 1, 1),  # greedy: generate_batch_size (3) rows a batch: one batch
    ("self_consistency", 3, 2),  # sampled: batch_size (2) rows a batch, each with its samples: two batches
])
def test_greedy_generation_batches_generate_batch_size_rows_and_sampling_batch_size(model_and_tokenizer, method,
                                                                                    samples, prompt_passes):
    model, tokenizer = model_and_tokenizer
    prompts = [EvalPrompt(id=str(i), label="positive", text=f"Review: {text}\nSentiment:", choices=CHOICES)
               for i, text in enumerate(["a moving film", "dull", "x y z"])]
    prompting = PromptingConfig(method=method, scoring=["generate"], max_new_tokens=4, samples=samples)
    shared = common_prefix_length([tokenizer(p.text)["input_ids"] for p in prompts])
    passes = []

    def count_prompt_passes(module, args, kwargs):
        cache = kwargs.get("past_key_values")
        passes.append((0 if cache is None else cache.get_seq_length()) == shared)

    texts, prompt_batches = {}, {}
    for generate_batch_size in (1, 3):
        passes.clear()
        settings = EvalSettings(batch_size=2, length_normalize=False, seed=0, generate_batch_size=generate_batch_size)
        hook = model.register_forward_pre_hook(count_prompt_passes, with_kwargs=True)
        try:
            result = evaluate_prompting(model, tokenizer, prompts, prompting, "t", False, CHOICES, settings, "t")
        finally:
            hook.remove()
        texts[generate_batch_size] = [p["generate"]["texts"] for p in result.predictions]
        prompt_batches[generate_batch_size] = sum(passes)
    assert prompt_batches[3] == prompt_passes
    if samples == 1:
        assert texts[1] == texts[3]  # greedy: the same texts whatever the batch
