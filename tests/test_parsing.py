"""Answer parsing on outputs of the kind small instruction models produce."""

import pytest

from tunelab.evaluation.parsing import parse_choice

CHOICES = ["negative", "positive"]


@pytest.mark.parametrize(
    ("output", "expected"),
    [
        ("positive", "positive"),
        ("Negative", "negative"),
        ("positive<|im_end|>", "positive"),
        (" Positive.\n", "positive"),
        ("The sentiment of this review is negative.", "negative"),
        ("Answer: positive", "positive"),
        ("Sentiment: NEGATIVE", "negative"),
        ("The reviewer praises the acting but finds the plot negative overall... so the answer is positive.", "positive"),
        ("Let's think step by step. 'Dull' is negative, 'funny' is positive. Overall the review is positive.", "positive"),
        ("Step 1: the review says 'a limp plot'. Step 2: this is negative. Answer: negative", "negative"),
        ("**Positive**", "positive"),
        ("It is positive-ish? Hard to say.", None),
        ("The review is negatively worded.", None),
        ("I cannot determine the sentiment.", None),
        ("", None),
    ],
)
def test_parse_choice(output, expected):
    assert parse_choice(output, CHOICES) == expected


def test_other_choice_sets():
    assert parse_choice("The answer is (B) yes", ["yes", "no"]) == "yes"
    assert parse_choice("no, definitely not", ["yes", "no"]) == "no"
