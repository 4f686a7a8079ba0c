"""Choice-likelihood scoring on a tiny random model, against a direct computation."""

import pytest
import torch
from transformers import AutoModelForCausalLM, AutoTokenizer

from tunelab.evaluation.scoring import SharedPrefix, choice_logprobs


@pytest.fixture(scope="module")
def model_and_tokenizer(tiny_model_dir):
    return AutoModelForCausalLM.from_pretrained(tiny_model_dir).eval(), AutoTokenizer.from_pretrained(tiny_model_dir)


def ids(tokenizer, text):
    return tokenizer(text, add_special_tokens=False)["input_ids"]


def direct_logprob(model, context: list[int], choice: list[int]) -> float:
    """One unpadded forward per choice, log-probabilities summed token by token."""
    sequence = torch.tensor([context + choice])
    with torch.no_grad():
        log_probs = torch.log_softmax(model(input_ids=sequence).logits[0].float(), dim=-1)
    return sum(log_probs[len(context) + k - 1, token].item() for k, token in enumerate(choice))


def test_batched_scores_equal_the_direct_computation(model_and_tokenizer):
    model, tokenizer = model_and_tokenizer
    rows = [ids(tokenizer, "Review: a moving film\nSentiment:"), ids(tokenizer, "Review: dull\nSentiment:")]
    choices = [ids(tokenizer, " negative<|im_end|>"), ids(tokenizer, " positive<|im_end|>"), ids(tokenizer, " meh")]
    assert len({len(c) for c in choices}) > 1  # unequal lengths exercise the padding
    scores = choice_logprobs(model, rows, choices, pad_id=tokenizer.pad_token_id)
    for r, row in enumerate(rows):
        for c, choice in enumerate(choices):
            assert scores[r, c].item() == pytest.approx(direct_logprob(model, row, choice), abs=1e-4)
    normalized = choice_logprobs(model, rows, choices, pad_id=tokenizer.pad_token_id, normalize=True)
    assert normalized[0, 2].item() == pytest.approx(scores[0, 2].item() / len(choices[2]), abs=1e-5)


def test_shared_prefix_cache_gives_the_uncached_scores(model_and_tokenizer):
    model, tokenizer = model_and_tokenizer
    prefix = ids(tokenizer, "Review: funny and warm\nSentiment: positive\nReview: tedious\nSentiment: negative\n")
    rows = [ids(tokenizer, "Review: a moving film\nSentiment:"), ids(tokenizer, "Review: awful\nSentiment:")]
    choices = [ids(tokenizer, " negative"), ids(tokenizer, " positive")]
    shared = SharedPrefix(model, prefix)
    cached = choice_logprobs(model, rows, choices, pad_id=tokenizer.pad_token_id, prefix=shared)
    uncached = choice_logprobs(model, [prefix + row for row in rows], choices, pad_id=tokenizer.pad_token_id)
    assert torch.allclose(cached, uncached, atol=1e-4)
    again = choice_logprobs(model, rows, choices, pad_id=tokenizer.pad_token_id, prefix=shared)
    assert torch.equal(cached, again)  # the shared cache is not consumed by a batch
