"""Choice-likelihood scoring on a tiny random model, against a direct computation."""

import pytest
import torch
from transformers import AutoModelForCausalLM, AutoTokenizer

from tunelab.evaluation.scoring import SharedPrefix, choice_logprobs, choice_logprobs_one_pass, common_prefix_length


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


@pytest.fixture(scope="module")
def rows_and_choices(model_and_tokenizer):
    _, tokenizer = model_and_tokenizer
    rows = [ids(tokenizer, "Review: a moving film\nSentiment:"), ids(tokenizer, "Review: dull\nSentiment:"), ids(tokenizer, "x")]
    choices = [ids(tokenizer, " negative<|im_end|>"), ids(tokenizer, " positive<|im_end|>"), ids(tokenizer, " meh")]
    assert len({len(c) for c in choices}) > 1 and len({len(r) for r in rows}) == 3  # padding on both sides is exercised
    return rows, choices


@pytest.mark.parametrize("score", [choice_logprobs, choice_logprobs_one_pass])
def test_batched_scores_equal_the_direct_computation(model_and_tokenizer, rows_and_choices, score):
    model, tokenizer = model_and_tokenizer
    rows, choices = rows_and_choices
    scores = score(model, rows, choices, pad_id=tokenizer.pad_token_id)
    for r, row in enumerate(rows):
        for c, choice in enumerate(choices):
            assert scores[r, c].item() == pytest.approx(direct_logprob(model, row, choice), abs=1e-4)
    normalized = score(model, rows, choices, pad_id=tokenizer.pad_token_id, normalize=True)
    assert normalized[0, 2].item() == pytest.approx(scores[0, 2].item() / len(choices[2]), abs=1e-5)


def test_prompt_tuning_is_scored_after_its_virtual_tokens(tiny_model_dir, model_and_tokenizer, rows_and_choices):
    """A soft prompt set to the embeddings of real tokens scores like those tokens written before the row."""
    from peft import PromptTuningConfig, TaskType, get_peft_model

    model, tokenizer = model_and_tokenizer
    rows, choices = rows_and_choices
    soft = ids(tokenizer, "Decide the sentiment.")
    tuned = get_peft_model(AutoModelForCausalLM.from_pretrained(tiny_model_dir),
                           PromptTuningConfig(task_type=TaskType.CAUSAL_LM, num_virtual_tokens=len(soft))).eval()
    with torch.no_grad():
        tuned.prompt_encoder["default"].embedding.weight.copy_(model.get_input_embeddings()(torch.tensor(soft)))
    scores = choice_logprobs_one_pass(tuned, rows, choices, pad_id=tokenizer.pad_token_id)
    written = choice_logprobs_one_pass(model, [soft + row for row in rows], choices, pad_id=tokenizer.pad_token_id)
    assert torch.allclose(scores, written, atol=1e-4)


def test_single_token_choices_need_one_forward_per_row(model_and_tokenizer, rows_and_choices):
    model, tokenizer = model_and_tokenizer
    rows, _ = rows_and_choices
    single = [[5], [9], [11]]
    scores = choice_logprobs(model, rows, single, pad_id=tokenizer.pad_token_id)
    for r, row in enumerate(rows):
        assert scores[r].tolist() == pytest.approx([direct_logprob(model, row, c) for c in single], abs=1e-4)


def test_shared_prefix_cache_gives_the_uncached_scores(model_and_tokenizer, rows_and_choices):
    model, tokenizer = model_and_tokenizer
    rows, choices = rows_and_choices
    prefix = ids(tokenizer, "Review: funny and warm\nSentiment: positive\nReview: tedious\nSentiment: negative\n")
    shared = SharedPrefix(model, prefix)
    cached = choice_logprobs(model, rows, choices, pad_id=tokenizer.pad_token_id, prefix=shared)
    uncached = choice_logprobs_one_pass(model, [prefix + row for row in rows], choices, pad_id=tokenizer.pad_token_id)
    assert torch.allclose(cached, uncached, atol=1e-4)
    again = choice_logprobs(model, rows, choices, pad_id=tokenizer.pad_token_id, prefix=shared)
    assert torch.equal(cached, again)  # the shared cache is not consumed by a batch


def test_common_prefix_leaves_every_row_a_token_of_its_own():
    assert common_prefix_length([[1, 2, 3, 4], [1, 2, 3, 5], [1, 2, 3, 4, 6]]) == 3
    assert common_prefix_length([[1, 2], [1, 2, 7]]) == 1
    assert common_prefix_length([[1, 2], [3, 2]]) == 0


def test_empty_rows_or_choices_are_refused(model_and_tokenizer):
    model, tokenizer = model_and_tokenizer
    with pytest.raises(ValueError, match="at least one token"):
        choice_logprobs(model, [[1, 2], []], [[3]], pad_id=tokenizer.pad_token_id)
    with pytest.raises(ValueError, match="at least one token"):
        choice_logprobs_one_pass(model, [[1, 2]], [[3], []], pad_id=tokenizer.pad_token_id)
