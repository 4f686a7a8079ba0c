"""Is a variant worse than the best one, on the same test rows? Paired tests, corrected for the table.

Overlapping confidence intervals are a weak comparison: two variants scored on the same rows
are compared row by row, which is far more sensitive.

- A proportion (accuracy, exact match: each row right or wrong) is compared with McNemar's exact
  test, the two-sided binomial test of the rows on which the two disagree (scipy.stats.binomtest);
  it is the test for two classifiers on one test set (Dietterich, 1998).
- A mean of per-row scores (ROUGE-L, token F1) is compared with a paired bootstrap of the mean
  difference (Koehn, 2004): rows are resampled, and the p-value is twice the share of resamples
  on which the difference has the other sign.
- Every variant is compared with the best, so the table makes many comparisons: Holm's
  step-down correction keeps the chance of any false "worse" at 5%. It is four lines, and SciPy
  has no Holm (statsmodels' multipletests does, but is not worth a dependency for them).
"""

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from tunelab.io.jsonl import read_jsonl

LEVEL = 0.05


def mcnemar_exact(first: list[float], second: list[float]) -> float:
    """Two-sided exact McNemar p-value of two 0/1 score lists on the same rows."""
    from scipy.stats import binomtest

    only_first = sum(a > b for a, b in zip(first, second, strict=True))
    only_second = sum(b > a for a, b in zip(first, second))
    disagree = only_first + only_second
    return 1.0 if disagree == 0 else float(binomtest(only_first, disagree, 0.5).pvalue)


def paired_bootstrap(first: list[float], second: list[float], resamples: int = 1000, seed: int = 0) -> float:
    """Two-sided paired-bootstrap p-value of the mean difference of two score lists on the same rows."""
    differences = np.asarray(first, dtype=float) - np.asarray(second, dtype=float)
    if not differences.any():
        return 1.0
    rng = np.random.default_rng(seed)
    means = differences[rng.integers(0, len(differences), (resamples, len(differences)))].mean(axis=1)
    return float(min(1.0, 2 * min((means <= 0).mean(), (means >= 0).mean())))


def holm(p_values: list[float]) -> list[float]:
    """Holm's step-down adjusted p-values, in the order given."""
    order = sorted(range(len(p_values)), key=p_values.__getitem__)
    adjusted, running = [0.0] * len(p_values), 0.0
    for rank, index in enumerate(order):
        running = max(running, min(1.0, (len(p_values) - rank) * p_values[index]))
        adjusted[index] = running
    return adjusted


@dataclass(frozen=True)
class Comparison:
    best: str
    """The best row's key (variant/prompting/scoring)."""
    rows: int
    """The test rows both were scored on."""
    difference: float
    """This row's mean score minus the best's, on those rows."""
    test: str
    p_value: float
    """Holm-adjusted across the table."""

    @property
    def verdict(self) -> str:
        """Worse only when the difference is negative and significant (a limited row may beat the
        best on its few rows)."""
        return "worse" if self.p_value < LEVEL and self.difference < 0 else "not significantly worse"


def compare_with_best(scores: dict[str, dict[str, float]], proportions: bool, seed: int = 0) -> dict[str, Comparison]:
    """Each row (key → its per-test-row scores by row id) against the best one, on the rows both
    were scored on. The best is the highest mean among the rows scored on the most test rows
    (methods limited to a few rows, such as self-consistency, are compared on those).
    ``proportions``: the scores are 0/1 (McNemar), else means (paired bootstrap)."""
    widest = max(map(len, scores.values()))
    best = max((key for key, rows in scores.items() if len(rows) == widest),
               key=lambda key: np.mean(list(scores[key].values())))
    raw = {}
    for key, rows in scores.items():
        if key == best:
            continue
        common = sorted(rows.keys() & scores[best].keys())
        mine, theirs = [rows[i] for i in common], [scores[best][i] for i in common]
        p = mcnemar_exact(mine, theirs) if proportions else paired_bootstrap(mine, theirs, seed=seed)
        raw[key] = (len(common), float(np.mean(mine) - np.mean(theirs)), p)
    adjusted = holm([p for _, _, p in raw.values()])
    test = "McNemar exact" if proportions else "paired bootstrap"
    return {key: Comparison(best, rows, difference, test, p)
            for (key, (rows, difference, _)), p in zip(raw.items(), adjusted)}


def row_scores(predictions: Path, scoring: str) -> dict[str, float]:
    """Each test row's headline score under ``scoring``, from an evaluate stage's predictions file."""
    return {str(row["id"]): row[scoring]["score"] for row in read_jsonl(predictions, required=("id", scoring))}
