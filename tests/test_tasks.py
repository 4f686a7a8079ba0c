"""The task registry: reading answers out of generated text, self-consistency votes, and scoring."""

from types import SimpleNamespace

import pytest

from tunelab.config.schema import DataConfig
from tunelab.errors import TunelabError
from tunelab.evaluation.tasks import TASKS, free_text_answer, score_generated, span_answer, vote


def test_every_task_type_is_registered_with_its_headline():
    assert {task.name: task.headline for task in TASKS} == {
        "classification": "accuracy", "generation": "rougeL", "extractive_qa": "exact_match", "math": "accuracy"}
    assert [task.name for task in TASKS if task.classifies] == ["classification"]
    # and the data side agrees: a task classifies in the config exactly where the registry says so
    assert all(DataConfig.classifies.fget(SimpleNamespace(task=task.name)) == task.classifies for task in TASKS)
    with pytest.raises(TunelabError, match="config key data.task: unknown value 'summarise'; expected one of"):
        TASKS["summarise"]


@pytest.mark.parametrize(("text", "answer"), [
    ("Denver Broncos\nThey won the game.", "Denver Broncos"),
    ("\n  Answer: the Denver Broncos.", "the Denver Broncos"),
    ("The answer is Santa Clara", "Santa Clara"),
    ("   \n", None),
    ("The passage names the stadium twice.\nAnswer: Levi's Stadium\n", "Levi's Stadium"),  # chain-of-thought
    ("It says answer: maybe.\nanswer:   Santa Clara.\nAnswer:", None),  # the last marker decides, and says nothing
])
def test_an_extractive_answer_is_the_first_line_or_the_line_after_the_last_answer_marker(text, answer):
    assert span_answer(text) == answer


@pytest.mark.parametrize(("text", "answer"), [
    ("  A haiku about rain.\n", "A haiku about rain."),
    ("I will keep it short.\nAnswer:\nRain on the roof,\nsoft drums.", "Rain on the roof,\nsoft drums."),
    ("The answer: yes, in the middle of a line", "The answer: yes, in the middle of a line"),
    ("Answer:   ", None),
])
def test_free_text_is_all_of_it_or_what_follows_the_last_answer_line(text, answer):
    assert free_text_answer(text) == answer


def test_each_task_reasons_towards_the_marker_its_answer_reader_looks_for():
    assert TASKS["math"].read_answer("3 + 4 = 7 apples, minus 2.\n" + "Answer: 5") == "5"
    for task in TASKS:
        assert "Answer:" in task.reasoning and task.table_metrics[0] == task.headline


def test_the_vote_compares_normalised_answers_and_breaks_ties_by_first_sample():
    math = TASKS["math"]
    answers = [math.read_answer(t) for t in ["so 72 clips. #### 72", "The answer is 72.0", "#### 48", "no idea"]]
    assert answers == ["72", "72", "48", None]
    assert vote(answers, math.vote_key) == ("72", 0.5)
    assert vote(["48", "72"], math.vote_key) == ("48", 0.5)  # a tie: the first sampled
    assert vote([None, None], math.vote_key) == (None, 0.0)
    qa = TASKS["extractive_qa"]
    assert vote(["The Broncos", "broncos", "Panthers"], qa.vote_key) == ("The Broncos", pytest.approx(2 / 3))


def test_math_is_scored_on_the_voted_final_answers():
    references = [["Natalia sold 48 + 24 = 72 clips.\n#### 72"], ["#### 5"]]
    samples = [["#### 72", "The answer is 72", "#### 71"], ["I am not sure", "no", "#### 6"]]
    outputs, metrics = score_generated(TASKS["math"], references, samples, seed=0)
    assert [o["answer"] for o in outputs] == ["72", "6"]
    assert metrics["accuracy"] == 0.5 and metrics["unparseable_share"] == 0.0
    assert metrics["mean_vote_share"] == pytest.approx((2 / 3 + 1 / 3) / 2)
    greedy, greedy_metrics = score_generated(TASKS["math"], references, [["#### 72"], ["I am not sure"]], seed=0)
    assert greedy_metrics["unparseable_share"] == 0.5 and "mean_vote_share" not in greedy_metrics
    assert "votes" not in greedy[0]


def test_free_text_is_scored_on_its_first_sample_without_a_vote():
    outputs, metrics = score_generated(TASKS["generation"], [["the cat sat on the mat"]],
                                       [["the cat sat", "a dog"]], seed=0)
    assert outputs[0]["answer"] == "the cat sat" and "vote_share" not in outputs[0]
    assert metrics["rougeL"] == pytest.approx(2 / 3) and metrics["examples"] == 1
    assert metrics["output_words_mean"] == 3.0  # the first sample's words


def test_extractive_qa_scores_the_first_line_against_every_gold_answer():
    _, metrics = score_generated(TASKS["extractive_qa"], [["Denver Broncos", "The Denver Broncos"], ["Santa Clara"]],
                                 [["Answer: Denver Broncos\nbecause"], ["Levi's Stadium"]], seed=0)
    assert metrics["exact_match"] == 0.5 and metrics["f1"] == pytest.approx(0.5)
    assert (metrics["answer_words_mean"], metrics["output_words_mean"]) == (2.0, 3.0)  # what was read, what it wrote
