"""Math final answers and SQuAD spans, against hand-labelled outputs of the kind models write."""

import pytest

from tunelab.evaluation.answers import math_answer, normalize_number, normalize_span, span_exact_match, span_f1

# (a model's output, the final answer a person reads in it); None: it states no number
MATH_OUTPUTS = [
    ("Natalia sold 48/2 = 24 clips in May.\nNatalia sold 48+24 = 72 clips altogether in April and May.\n#### 72", "72"),
    ("The answer is 18.", "18"),
    ("She has 5 + 3 = 8 apples, which cost $8.00. The answer is $8.00.", "8"),
    ("Answer: 1,250", "1250"),
    ("So the total cost is $1,250.50.", "1250.5"),
    ("He earns 12 * 4 = 48 dollars per week, so in 3 weeks he earns 48 * 3 = 144 dollars.", "144"),
    ("I don't know.", None),
    ("The answer is 42, because 6 * 7 = 42 and 40 + 2 = 42. I checked 3 times.", "42"),
    ("Answer: -5", "-5"),
    ("Half of 3/2 is 3/4, so the final answer is \\boxed{3/4}.", "0.75"),
    ("First, 10% of 200 is 20. Then 200 - 20 = 180.\n#### 180", "180"),
    ("The answer is: 7 apples", "7"),
    ("There are 3 boxes with 12 eggs each, so 3 x 12 = 36 eggs. Answer: 36 eggs.", "36"),
    ("0.5 of 10 is 5.0", "5"),
    ("Step 1: 7 - 2 = 5. Step 2: 5 * 2 = 10.", "10"),
    ("The answer is .5", "0.5"),
    ("#### 1,000,000", "1000000"),
    ("She pays 3 * $4 = $12.\n#### 12", "12"),
    ("The answer is twelve.", None),
    ("In 2023 there were 5 cats; by 2024 there were 8.", "8"),
    ("x = 3.14159", "3.14159"),
    ("Total: 45 minutes. The answer is 45 minutes, or 0.75 hours.", "45"),
    ("The answer is -0.", "0"),
    ("12/4 = 3", "3"),
    ("He had 1, 2, then 3 apples", "3"),
    ("", None),
]


@pytest.mark.parametrize(("output", "answer"), MATH_OUTPUTS)
def test_the_final_answer_is_read_as_a_person_reads_it(output, answer):
    assert math_answer(output) == answer


def test_there_are_at_least_twenty_real_looking_outputs():
    assert len(MATH_OUTPUTS) >= 20 and sum(answer is None for _, answer in MATH_OUTPUTS) >= 3


@pytest.mark.parametrize(("spellings", "canonical"), [
    (["72", "72.0", "72.00", "$72", "+72", "72."], "72"),
    (["1,000", "1000", "$1,000.00"], "1000"),
    (["0.5", ".5", "1/2", "2/4"], "0.5"),
    (["1/3", "2/6"], "1/3"),
    (["-0", "0.0"], "0"),
    (["-2.50", "-5/2"], "-2.5"),
])
def test_equal_numbers_are_spelled_one_way(spellings, canonical):
    assert {normalize_number(spelling) for spelling in spellings} == {canonical}


@pytest.mark.parametrize("text", ["twelve", "", "1/0", "3.4.5"])
def test_what_is_not_a_number_is_none(text):
    assert normalize_number(text) is None


@pytest.mark.parametrize(("text", "normalized"), [
    ("The Eiffel Tower!", "eiffel tower"),
    ("  A  cat,   an apple ", "cat apple"),
    ("Theatre", "theatre"),  # an article inside a word stays
    ("U.S.A.", "usa"),
    ("the", ""),
    ("1,000 (one thousand)", "1000 one thousand"),
])
def test_squad_normalisation(text, normalized):
    assert normalize_span(text) == normalized


@pytest.mark.parametrize(("golds", "predicted", "match", "f1"), [
    (["Denver Broncos", "The Denver Broncos"], "denver broncos.", 1.0, 1.0),
    (["the big red dog"], "red dog barked", 0.0, 2 / 3),  # precision 2/3, recall 2/3
    (["Paris", "city of Paris"], "Paris France", 0.0, 2 / 3),  # best gold: "Paris" (P 1/2, R 1)
    (["Paris"], "", 0.0, 0.0),
    (["a cat"], "The cat", 1.0, 1.0),
    (["1,000"], "1000", 1.0, 1.0),
    (["The Eiffel Tower"], "eiffel tower.", 1.0, 1.0),  # case, article and punctuation do not count
    (["Paris"], "London", 0.0, 0.0),
    (["new york city"], "york", 0.0, 2 * (1 / 1) * (1 / 3) / (1 + 1 / 3)),  # precision 1, recall 1/3
    (["a b c d"], "b c e", 0.0, 2 / 3),  # "a" is an article: gold is "b c d", 2 of 3 tokens shared each way
])
def test_exact_match_and_f1_take_the_best_gold_answer(golds, predicted, match, f1):
    assert span_exact_match(golds, predicted) == match
    assert span_f1(golds, predicted) == pytest.approx(f1)
