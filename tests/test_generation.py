"""Batched generation (with and without the shared-prefix cache) and the self-consistency vote."""

import pytest
import torch
from transformers import AutoModelForCausalLM, AutoTokenizer

from tunelab.evaluation.generation import Sampling, generate, majority_vote
from tunelab.evaluation.scoring import SharedPrefix

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
