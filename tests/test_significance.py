"""Paired comparisons against the best variant: McNemar's exact test, a paired bootstrap, Holm's correction."""

import numpy as np
import pytest
from scipy.stats import bootstrap

from tunelab.reporting.significance import compare_with_best, holm, mcnemar_exact, paired_bootstrap


def pairs(both: int, only_first: int, only_second: int, neither: int) -> tuple[list[float], list[float]]:
    """Two 0/1 score lists with the given 2×2 table of agreement."""
    first = [1.0] * both + [1.0] * only_first + [0.0] * only_second + [0.0] * neither
    second = [1.0] * both + [0.0] * only_first + [1.0] * only_second + [0.0] * neither
    return first, second


@pytest.mark.parametrize(("table", "p_value"), [
    ((59, 6, 16, 80), 0.052478790283203125),  # 2·P(X ≤ 6), X ~ Binomial(22, 1/2): the discordant rows alone count
    ((3, 8, 1, 0), 20 / 512),  # 2·(C(9,8) + C(9,9)) / 2⁹
    ((5, 0, 0, 7), 1.0),  # they never disagree
])
def test_mcnemar_exact_is_the_binomial_test_of_the_discordant_rows(table, p_value):
    assert mcnemar_exact(*pairs(*table)) == pytest.approx(p_value)
    assert mcnemar_exact(*reversed(pairs(*table))) == pytest.approx(p_value)  # symmetric


def test_holm_matches_the_step_down_procedure_computed_by_hand():
    # sorted: 0.005·4 = 0.02, 0.01·3 = 0.03, 0.03·2 = 0.06, 0.04·1 → kept monotone at 0.06
    assert holm([0.01, 0.04, 0.03, 0.005]) == pytest.approx([0.03, 0.06, 0.06, 0.02])
    assert holm([0.5, 0.9]) == pytest.approx([1.0, 1.0])  # capped at 1
    assert holm([]) == []


def test_the_paired_bootstrap_agrees_with_scipys_paired_bootstrap_interval():
    rng = np.random.default_rng(3)
    best = rng.uniform(0.3, 0.9, 200)
    for shift, significant in ((0.05, True), (0.0, False)):
        other = np.clip(best - shift + rng.normal(0, 0.05, 200), 0, 1) if shift else best[rng.permutation(200)]
        p = paired_bootstrap(list(other), list(best), resamples=2000, seed=1)
        interval = bootstrap((other, best), lambda a, b, axis: (a - b).mean(axis=axis), paired=True, n_resamples=2000,
                             method="percentile", random_state=1).confidence_interval
        assert (p < 0.05) == significant == (not interval.low <= 0 <= interval.high)


def test_each_row_is_compared_with_the_best_on_the_rows_both_were_scored_on():
    ids = [f"r{i}" for i in range(40)]
    best = {i: 1.0 for i in ids[:36]} | {i: 0.0 for i in ids[36:]}  # 0.9
    close = dict(best) | {"r0": 0.0, "r36": 1.0}  # disagrees on two rows only
    far = {i: float(n % 2) for n, i in enumerate(ids)}  # 0.5
    limited = {i: 1.0 for i in ids[:10]}  # ten rows only, all right: not worse
    compared = compare_with_best({"trained": best, "base": far, "merged": close, "cot": limited}, proportions=True)
    assert set(compared) == {"base", "merged", "cot"} and {c.best for c in compared.values()} == {"trained"}
    assert (compared["base"].verdict, compared["merged"].verdict, compared["cot"].verdict) == (
        "worse", "not significantly worse", "not significantly worse")
    assert (compared["cot"].rows, compared["cot"].difference) == (10, 0.0)
    assert compared["base"].difference == pytest.approx(0.5 - 0.9) and compared["base"].test == "McNemar exact"
    raw = mcnemar_exact([far[i] for i in ids], [best[i] for i in ids])
    assert compared["base"].p_value == pytest.approx(min(1.0, 3 * raw))  # the smallest of three: Holm multiplies by 3
