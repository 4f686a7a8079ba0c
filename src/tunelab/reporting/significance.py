"""Can a cheaper row replace the best one? Its paired difference from the best, and non-inferiority
within a stated margin.

"Not significantly worse" is not a reason to ship: a failure to find a difference is no evidence
that there is none, and the fewer test rows, the easier it is to find none. A cheaper row is
recommended only when it is shown to be at most ``margin`` worse than the best: the lower end of
the one-sided interval of its paired difference (row − best, on the test rows both were scored
on) lies above −margin.

- A proportion (accuracy, exact match: each row right or wrong) gets McNemar's exact conditional
  interval: given the d rows on which the two disagree, the count the row alone gets right is
  Binomial(d, π), the Clopper–Pearson interval of π (scipy.stats.binomtest) maps to the difference
  (d/n)(2π − 1). With no row in disagreement the difference is 0 on these rows; the interval is
  then ± the Clopper–Pearson upper bound of 0 disagreements in n, so no interval has zero width.
- A mean of per-row scores (ROUGE-L, token F1) gets a paired percentile bootstrap of the mean
  difference (Koehn, 2004; scipy.stats.bootstrap with paired=True).
- Multiplicity: every row is compared with the best, and each comparison could yield a claim.
  Bonferroni splits ``level`` over the m rows compared, so each one-sided bound holds at level/m
  and all the table's claims hold together with probability ≥ 1 − level: the more rows, the
  stricter each claim, never the looser. (Holm's step-down is more powerful for tests, but it gives
  no intervals that agree with its verdicts; the report shows intervals.)

Verdicts: **non-inferior** when the lower bound is above −margin; else **worse** when the upper
bound is below 0 (shown to be worse, by an unknown amount); else **inconclusive**, never
recommended.
"""

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from tunelab.io.jsonl import read_jsonl

NON_INFERIOR, INCONCLUSIVE, WORSE, BEST = "non-inferior", "inconclusive", "worse", "best"
RECOMMENDABLE = (BEST, NON_INFERIOR)


def proportion_difference_interval(mine: list[float], best: list[float], confidence: float) -> tuple[float, float]:
    """Two-sided ``confidence`` interval of mean(mine) − mean(best) for 0/1 scores on the same rows
    (McNemar's exact conditional interval; the module's docstring says why and what it does at d = 0)."""
    from scipy.stats import binomtest

    n = len(mine)
    only_mine = sum(a > b for a, b in zip(mine, best, strict=True))
    disagree = only_mine + sum(b > a for a, b in zip(mine, best))
    if disagree == 0:
        bound = binomtest(0, n).proportion_ci(confidence, method="exact").high
        return -bound, bound
    pi = binomtest(only_mine, disagree).proportion_ci(confidence, method="exact")
    share = disagree / n
    return share * (2 * pi.low - 1), share * (2 * pi.high - 1)


def mean_difference_interval(mine: list[float], best: list[float], confidence: float,
                             seed: int = 0, resamples: int = 9999) -> tuple[float, float]:
    """Two-sided ``confidence`` paired percentile-bootstrap interval of mean(mine) − mean(best)."""
    from scipy.stats import bootstrap

    differences = np.asarray(mine, dtype=float) - np.asarray(best, dtype=float)
    if np.ptp(differences) == 0:  # every resample is the same mean: a bootstrap has nothing to vary
        return float(differences[0]), float(differences[0])
    interval = bootstrap((differences,), np.mean, confidence_level=confidence, n_resamples=resamples,
                         method="percentile", random_state=seed).confidence_interval
    return float(interval.low), float(interval.high)


@dataclass(frozen=True)
class Comparison:
    best: str
    """The best row's key (variant/prompting/scoring)."""
    rows: int
    """The test rows both were scored on."""
    difference: float
    """This row's mean score minus the best's, on those rows."""
    low: float
    high: float
    """The difference's interval: each end a one-sided bound at ``level`` (Bonferroni-corrected)."""
    level: float
    """The one-sided error rate of each end, after the correction."""
    margin: float
    """How much worse than the best a non-inferior row may be (eval.recommend.margin)."""
    test: str

    @property
    def verdict(self) -> str:
        if self.low > -self.margin:
            return NON_INFERIOR
        return WORSE if self.high < 0 else INCONCLUSIVE


def compare_with_best(scores: dict[str, dict[str, float]], margin: float, level: float, seed: int = 0,
                      proportions: bool | None = None) -> dict[str, Comparison]:
    """Each row (key → its per-test-row scores by row id) against the best one, on the rows both
    were scored on. The best is the highest mean among the rows scored on the most test rows
    (methods limited to a few rows, such as self-consistency, are compared on those).
    ``proportions``: the scores are 0/1 (exact conditional interval), else means (paired bootstrap);
    None: 0/1 when every score is (where no interval method says which)."""
    if proportions is None:
        proportions = all(value in (0.0, 1.0) for rows in scores.values() for value in rows.values())
    widest = max(map(len, scores.values()))
    best = max((key for key, rows in scores.items() if len(rows) == widest),
               key=lambda key: np.mean(list(scores[key].values())))
    each = level / max(1, len(scores) - 1)  # Bonferroni: the table's claims hold together at `level`
    test = "McNemar exact (conditional)" if proportions else "paired bootstrap"
    compared = {}
    for key, rows in scores.items():
        if key == best:
            continue
        common = sorted(rows.keys() & scores[best].keys())
        mine, theirs = [rows[i] for i in common], [scores[best][i] for i in common]
        confidence = 1 - 2 * each
        low, high = (proportion_difference_interval(mine, theirs, confidence) if proportions
                     else mean_difference_interval(mine, theirs, confidence, seed))
        compared[key] = Comparison(best, len(common), float(np.mean(mine) - np.mean(theirs)), low, high, each, margin,
                                   test)
    return compared


def row_scores(predictions: Path, scoring: str) -> dict[str, float]:
    """Each test row's headline score under ``scoring``, from an evaluate stage's predictions file."""
    return {str(row["id"]): row[scoring]["score"] for row in read_jsonl(predictions, required=("id", scoring))}
