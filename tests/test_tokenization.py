import pytest

from tunelab.errors import TunelabError
from tunelab.prompts.tokenization import (
    TokenizedExample,
    check_ends_with_eos,
    drop_truncated,
    length_report,
    special_tokens_report,
    tokenize_example,
)


def test_mask_covers_exactly_the_completion_tokens(tiny_tokenizer):
    prompt, completion = "Review: dull\n", "negative<|im_end|>"
    example = tokenize_example(tiny_tokenizer, prompt, completion, max_length=64, add_special_tokens=False)
    prompt_ids = tiny_tokenizer(prompt, add_special_tokens=False)["input_ids"]
    assert example.input_ids[: len(prompt_ids)] == prompt_ids
    assert example.completion_mask == [0] * len(prompt_ids) + [1] * (len(example.input_ids) - len(prompt_ids))
    assert example.input_ids[-1] == tiny_tokenizer.eos_token_id


def test_truncation_keeps_max_length_and_is_reported(tiny_tokenizer):
    example = tokenize_example(tiny_tokenizer, "Review: a moving film\n", "positive<|im_end|>", 4, False)
    assert len(example.input_ids) == 4 and example.truncated
    assert example.untruncated_length > 4


def test_examples_whose_target_would_be_cut_are_dropped_and_counted(tiny_tokenizer):
    fits = tokenize_example(tiny_tokenizer, "Review: dull\n", "negative<|im_end|>", 64, False)
    cut = tokenize_example(tiny_tokenizer, "Review: a moving film\n", "positive<|im_end|>", 4, False)
    kept, dropped = drop_truncated([({"id": "a"}, fits), ({"id": "b"}, cut), ({"id": "c"}, fits)])
    assert [row["id"] for row, _ in kept] == ["a", "c"] and dropped == 1


def test_completion_without_eos_fails_loudly(tiny_tokenizer):
    example = tokenize_example(tiny_tokenizer, "Review: dull\n", "negative", 64, False)
    with pytest.raises(TunelabError, match="row r1: the completion does not end with the EOS token"):
        check_ends_with_eos(example, tiny_tokenizer.eos_token_id, "r1")


def test_report_figures_on_known_examples(tiny_tokenizer):
    eos = tiny_tokenizer.eos_token_id
    examples = [
        TokenizedExample([5, 6, 7, eos], [0, 0, 1, 1], untruncated_length=4, prompt_length=2),
        TokenizedExample([5, 6, 7, 8], [0, 0, 0, 1], untruncated_length=10, prompt_length=3),
    ]
    report = length_report(examples, max_length=4, tokenizer=tiny_tokenizer)
    assert report["tokens"] == {"p50": 7.0, "p95": 9.7, "max": 10}
    assert report["truncated_share"] == 0.5
    assert report["loss_token_share"] == 3 / 8 and report["loss_tokens"] == 3
    assert report["eos_at_end_share"] == 0.5


def test_special_tokens_report_flags_pad_equal_to_eos(tiny_tokenizer):
    report = special_tokens_report(tiny_tokenizer)
    assert report["pad_equals_eos"] is True and report["eos_token"] == "<|im_end|>"
