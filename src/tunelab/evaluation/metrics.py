"""Classification metrics with 95% confidence intervals, for scoring predictions on the test split
(generated text against references: text_metrics.py).

Accuracy's interval is Wilson's score interval (good at small n and near 0 or 1, where the
normal approximation fails); macro-F1's is a percentile bootstrap over examples, since it has
no closed form. Both are stated in every report that shows them.
"""

import math
from dataclasses import dataclass

import numpy as np

CONFIDENCE = 0.95


@dataclass(frozen=True)
class Interval:
    low: float
    high: float


def wilson_interval(successes: int, total: int, confidence: float = CONFIDENCE) -> Interval:
    """Wilson score interval of a proportion successes/total."""
    # scipy.stats here, not at the top: importing it costs ~1 s, and every stage that imports the task
    # registry (check, preferences, align, ...) would pay it without computing an interval
    from scipy.stats import norm

    if total == 0:
        return Interval(0.0, 1.0)
    z = norm.ppf(0.5 + confidence / 2)
    share = successes / total
    centre = (share + z * z / (2 * total)) / (1 + z * z / total)
    half = z * math.sqrt(share * (1 - share) / total + z * z / (4 * total * total)) / (1 + z * z / total)
    return Interval(max(0.0, centre - half), min(1.0, centre + half))


def confusion_matrix(gold: list[str], predicted: list[str], labels: list[str]) -> list[list[int]]:
    """Rows are gold labels, columns predictions, both in ``labels`` order; predictions outside
    ``labels`` (e.g. unparseable generations) count in no column but still count as wrong."""
    index = {label: i for i, label in enumerate(labels)}
    matrix = [[0] * len(labels) for _ in labels]
    for truth, guess in zip(gold, predicted, strict=True):
        if guess in index:
            matrix[index[truth]][index[guess]] += 1
    return matrix


def per_class(matrix: list[list[int]], gold_counts: list[int], labels: list[str]) -> dict[str, dict[str, float]]:
    result = {}
    for i, label in enumerate(labels):
        true_positive = matrix[i][i]
        predicted = sum(row[i] for row in matrix)
        precision = true_positive / predicted if predicted else 0.0
        recall = true_positive / gold_counts[i] if gold_counts[i] else 0.0
        f1 = 2 * precision * recall / (precision + recall) if precision + recall else 0.0
        result[label] = {"precision": precision, "recall": recall, "f1": f1, "support": gold_counts[i]}
    return result


def macro_f1(gold: list[str], predicted: list[str], labels: list[str]) -> float:
    matrix = confusion_matrix(gold, predicted, labels)
    counts = [sum(truth == label for truth in gold) for label in labels]
    return float(np.mean([scores["f1"] for scores in per_class(matrix, counts, labels).values()]))


def percentile_interval(resampled: list[float], confidence: float = CONFIDENCE) -> Interval:
    """The central ``confidence`` share of a statistic's bootstrap resamples (percentile method)."""
    tail = (1 - confidence) / 2 * 100
    low, high = np.percentile(resampled, [tail, 100 - tail])
    return Interval(float(low), float(high))


def bootstrap_interval(gold: list[str], predicted: list[str], labels: list[str], resamples: int = 1000,
                       seed: int = 0, confidence: float = CONFIDENCE) -> Interval:
    """Percentile bootstrap interval of macro-F1, resampling examples with replacement."""
    rng = np.random.default_rng(seed)
    gold_array, predicted_array = np.asarray(gold, dtype=object), np.asarray(predicted, dtype=object)
    scores = []
    for _ in range(resamples):
        sample = rng.integers(0, len(gold), len(gold))
        scores.append(macro_f1(list(gold_array[sample]), list(predicted_array[sample]), labels))
    return percentile_interval(scores, confidence)


def classification_report(gold: list[str], predicted: list[str], labels: list[str], seed: int = 0) -> dict:
    """Accuracy and macro-F1 with 95% intervals, per-class precision/recall/F1, confusion matrix."""
    if not gold:
        raise ValueError("no predictions to score")
    correct = sum(truth == guess for truth, guess in zip(gold, predicted, strict=True))
    matrix = confusion_matrix(gold, predicted, labels)
    counts = [sum(truth == label for truth in gold) for label in labels]
    accuracy_interval = wilson_interval(correct, len(gold))
    f1_interval = bootstrap_interval(gold, predicted, labels, seed=seed)
    return {
        "examples": len(gold),
        "accuracy": correct / len(gold),
        "accuracy_ci95": [accuracy_interval.low, accuracy_interval.high],
        "accuracy_ci_method": "wilson",
        "macro_f1": macro_f1(gold, predicted, labels),
        "macro_f1_ci95": [f1_interval.low, f1_interval.high],
        "macro_f1_ci_method": "percentile bootstrap, 1000 resamples",
        "per_class": per_class(matrix, counts, labels),
        "confusion_matrix": {"labels": labels, "rows_gold_columns_predicted": matrix},
    }
