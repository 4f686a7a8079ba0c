"""Metric math on hand-made predictions, against independent reference computations."""

import pytest
from scipy.stats import binomtest
from sklearn.metrics import confusion_matrix as sklearn_confusion
from sklearn.metrics import f1_score, precision_recall_fscore_support

from tunelab.evaluation.metrics import (
    bootstrap_interval,
    classification_report,
    macro_f1,
    wilson_interval,
)

LABELS = ["negative", "positive"]
GOLD = ["positive"] * 6 + ["negative"] * 4
PREDICTED = ["positive", "positive", "positive", "positive", "negative", "negative",
             "negative", "negative", "negative", "positive"]


def test_known_values_by_hand():
    report = classification_report(GOLD, PREDICTED, LABELS)
    assert report["accuracy"] == 0.7  # 4 of 6 positives, 3 of 4 negatives
    assert report["confusion_matrix"]["rows_gold_columns_predicted"] == [[3, 1], [2, 4]]
    assert report["per_class"]["positive"]["precision"] == pytest.approx(4 / 5)
    assert report["per_class"]["positive"]["recall"] == pytest.approx(4 / 6)
    assert report["per_class"]["negative"]["precision"] == pytest.approx(3 / 5)
    assert report["macro_f1"] == pytest.approx((2 * 0.8 * (4 / 6) / (0.8 + 4 / 6) + 2 * 0.6 * 0.75 / 1.35) / 2)


def test_matches_scikit_learn():
    report = classification_report(GOLD, PREDICTED, LABELS)
    assert report["macro_f1"] == pytest.approx(f1_score(GOLD, PREDICTED, labels=LABELS, average="macro"))
    precision, recall, f1, support = precision_recall_fscore_support(GOLD, PREDICTED, labels=LABELS)
    for i, label in enumerate(LABELS):
        assert report["per_class"][label]["precision"] == pytest.approx(precision[i])
        assert report["per_class"][label]["recall"] == pytest.approx(recall[i])
        assert report["per_class"][label]["support"] == support[i]
    assert report["confusion_matrix"]["rows_gold_columns_predicted"] == sklearn_confusion(GOLD, PREDICTED, labels=LABELS).tolist()


@pytest.mark.parametrize(("successes", "total"), [(7, 10), (0, 12), (250, 500), (499, 500)])
def test_wilson_interval_matches_scipy(successes, total):
    reference = binomtest(successes, total).proportion_ci(confidence_level=0.95, method="wilson")
    interval = wilson_interval(successes, total)
    assert interval.low == pytest.approx(reference.low, abs=1e-9)
    assert interval.high == pytest.approx(reference.high, abs=1e-9)


def test_unparseable_predictions_count_as_wrong_and_in_no_column():
    report = classification_report(["positive", "negative"], ["positive", "UNPARSEABLE"], LABELS)
    assert report["accuracy"] == 0.5
    assert report["confusion_matrix"]["rows_gold_columns_predicted"] == [[0, 0], [0, 1]]


def test_bootstrap_interval_contains_the_estimate_and_narrows_with_more_data():
    small = bootstrap_interval(GOLD, PREDICTED, LABELS)
    large = bootstrap_interval(GOLD * 20, PREDICTED * 20, LABELS)
    estimate = macro_f1(GOLD, PREDICTED, LABELS)
    assert small.low <= estimate <= small.high and large.low <= estimate <= large.high
    assert large.high - large.low < (small.high - small.low) / 2
    assert bootstrap_interval(GOLD, PREDICTED, LABELS, seed=1) == bootstrap_interval(GOLD, PREDICTED, LABELS, seed=1)


def test_the_bootstrap_statistic_is_scikit_learns_macro_f1_on_every_resample():
    """bootstrap_interval computes macro-F1 for many resamples at once (metrics.resampled_macro_f1);
    each must be what scikit-learn computes for the same rows, unparseable predictions included."""
    import numpy as np

    from tunelab.evaluation.metrics import resampled_macro_f1

    labels = ["a", "b", "c"]
    rng = np.random.default_rng(0)
    gold = list(rng.choice(labels, 60))
    predicted = [g if rng.random() < 0.6 else str(rng.choice(labels + ["??"])) for g in gold]
    rows = rng.integers(0, 60, (50, 60))
    computed = resampled_macro_f1(gold, predicted, labels)(rows)
    for resample, value in zip(rows, computed, strict=True):
        expected = f1_score([gold[i] for i in resample], [predicted[i] for i in resample], labels=labels,
                            average="macro", zero_division=0)
        assert value == pytest.approx(expected, abs=1e-12)
