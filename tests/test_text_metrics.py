"""Generation, extractive-QA and math metrics: hand-computed tables and the reference packages."""

import numpy as np
import pytest
import sacrebleu
from rouge_score import rouge_scorer
from scipy.stats import binomtest

from tunelab.evaluation.text_metrics import (
    bootstrap_mean_interval,
    extractive_qa_report,
    generation_report,
    math_report,
    rouge_scores,
)


def test_rouge_by_hand():
    """ref: the cat sat on the mat (6 words), output: the cat sat (3): every output word matches."""
    scores = rouge_scores([["the cat sat on the mat"]], ["the cat sat"])
    assert scores["rouge1"] == [pytest.approx(2 / 3)]  # P 3/3, R 3/6
    assert scores["rouge2"] == [pytest.approx(2 * 1 * 0.4 / 1.4)]  # bigrams: P 2/2, R 2/5
    assert scores["rougeL"] == [pytest.approx(2 / 3)]  # LCS 3


def test_rouge_takes_the_best_reference_as_rouge_score_does():
    references, output = ["a dog ran home", "the cat sat on the mat"], "the cat sat"
    expected = max(rouge_scorer.RougeScorer(["rougeL"], use_stemmer=True).score(r, output)["rougeL"].fmeasure
                   for r in references)
    assert rouge_scores([references], [output])["rougeL"] == [pytest.approx(expected)]


def test_corpus_bleu_and_chrf_are_sacrebleus_with_uneven_references():
    references = [["The cat is on the mat.", "There is a cat on the mat."], ["He reads a long book."]]
    outputs = ["The cat is on the mat.", "He is reading a book."]
    report = generation_report(references, outputs)
    streams = [["The cat is on the mat.", "He reads a long book."], ["There is a cat on the mat.", None]]
    assert report["bleu"] == pytest.approx(sacrebleu.corpus_bleu(outputs, streams).score)
    assert report["chrf"] == pytest.approx(sacrebleu.corpus_chrf(outputs, streams).score)
    identical = generation_report([["the very same words here"]], ["the very same words here"])
    assert identical["bleu"] == pytest.approx(100) and identical["chrf"] == pytest.approx(100)


def test_generation_report_means_and_lengths():
    report = generation_report([["the cat sat on the mat"], ["Paris"]], ["the cat sat", "paris."], seed=0)
    assert report["examples"] == 2
    assert report["rougeL"] == pytest.approx((2 / 3 + 1) / 2)
    assert report["exact_match"] == 0.5 and report["token_f1"] == pytest.approx((2 * 1 * 0.5 / 1.5 + 1) / 2)
    assert report["answer_words_mean"] == 2.0
    low, high = report["rougeL_ci95"]
    assert 2 / 3 <= low <= report["rougeL"] <= high <= 1.0


def test_the_bootstrap_interval_of_a_mean_is_the_normal_one_for_a_large_sample():
    """200 scores, half 1 and half 0: mean 0.5, standard error 0.5/sqrt(200) = 0.0354, so about 0.5 ± 0.069."""
    interval = bootstrap_mean_interval([1.0, 0.0] * 100, seed=3)
    assert interval.low == pytest.approx(0.5 - 1.96 * 0.5 / np.sqrt(200), abs=0.01)
    assert interval.high == pytest.approx(0.5 + 1.96 * 0.5 / np.sqrt(200), abs=0.01)
    constant = bootstrap_mean_interval([0.4] * 5)
    assert (constant.low, constant.high) == pytest.approx((0.4, 0.4))


def test_extractive_qa_report():
    report = extractive_qa_report([["Denver Broncos", "The Denver Broncos"], ["the big red dog"], ["Paris"]],
                                  ["denver broncos", "red dog barked", "Lyon"])
    assert report["exact_match"] == pytest.approx(1 / 3)
    reference = binomtest(1, 3).proportion_ci(confidence_level=0.95, method="wilson")
    assert report["exact_match_ci95"] == pytest.approx([reference.low, reference.high])
    assert report["f1"] == pytest.approx((1 + 2 / 3 + 0) / 3)
    assert report["f1_ci_method"] == "percentile bootstrap, 1000 resamples"


def test_extractive_qa_report_averages_over_examples():
    report = extractive_qa_report([["Paris"], ["the cat"]], ["paris!", "a dog"])
    assert report["exact_match"] == 0.5 and report["f1"] == pytest.approx(0.5)
    reference = binomtest(1, 2).proportion_ci(confidence_level=0.95, method="wilson")
    assert report["exact_match_ci95"] == pytest.approx([reference.low, reference.high])


def test_math_report_counts_unparseable_answers_as_wrong():
    report = math_report([["so 72 clips\n#### 72"], ["18"], ["1/2"], ["3"]], ["72", None, "0.5", "4"])
    assert report["accuracy"] == 0.5 and report["unparseable_share"] == 0.25
    reference = binomtest(2, 4).proportion_ci(confidence_level=0.95, method="wilson")
    assert report["accuracy_ci95"] == pytest.approx([reference.low, reference.high])


def test_no_answer_scores_as_an_empty_one():
    assert extractive_qa_report([["Paris"], ["Lyon"]], [None, "Lyon"])["exact_match"] == 0.5
    assert generation_report([["the cat sat"], ["the cat sat"]], [None, "the cat sat"])["rougeL"] == pytest.approx(0.5)
