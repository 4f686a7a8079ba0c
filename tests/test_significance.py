"""Non-inferiority within a margin: paired intervals of the difference from the best, Bonferroni
across the table, and the recommendation that rests on them."""

import numpy as np
import pytest
from scipy.stats import binomtest

from tunelab.reporting.significance import (
    INCONCLUSIVE,
    NON_INFERIOR,
    WORSE,
    compare_with_best,
    mean_difference_interval,
    proportion_difference_interval,
)
from tunelab.reporting.tables import recommendation, recommended, with_comparisons

MARGIN, LEVEL = 0.02, 0.05


def pairs(both: int, only_first: int, only_second: int, neither: int) -> tuple[list[float], list[float]]:
    """Two 0/1 score lists with the given 2×2 table of agreement."""
    first = [1.0] * both + [1.0] * only_first + [0.0] * only_second + [0.0] * neither
    second = [1.0] * both + [0.0] * only_first + [1.0] * only_second + [0.0] * neither
    return first, second


def by_id(scores: list[float]) -> dict[str, float]:
    return {f"r{i}": s for i, s in enumerate(scores)}


def row(variant: str, prompting: str, scores: list[float], latency: float | None, train_seconds: float) -> dict:
    """A report row of the given per-test-row scores and costs."""
    return {"variant": variant, "prompting": prompting, "scoring": "choice", "metric": "accuracy",
            "score": float(np.mean(scores)), "score_ci_low": None, "score_ci_high": None, "examples": len(scores),
            "token_latency_p50_ms": latency, "size_mb": 500.0 if latency else None, "train_seconds": train_seconds}


def judged(rows: list[dict], scores: dict[str, list[float]], proportions: bool = True) -> list[dict]:
    keys = {f"{r['variant']}/{r['prompting']}/choice": r for r in rows}
    compared = compare_with_best({key: by_id(scores[key]) for key in keys}, MARGIN, LEVEL, proportions=proportions)
    return with_comparisons(rows, compared)


def test_the_proportion_interval_is_mcnemars_exact_conditional_one():
    # 60 rows only the cheap row gets right, 81 only the best: π = 60/141, mapped by 141/500 to the difference
    cheap, best = pairs(180, 60, 81, 179)
    low, high = proportion_difference_interval(cheap, best, 0.9)
    pi = binomtest(60, 141).proportion_ci(0.9, method="exact")
    assert (low, high) == pytest.approx((141 / 500 * (2 * pi.low - 1), 141 / 500 * (2 * pi.high - 1)))
    assert low < np.mean(cheap) - np.mean(best) < high
    # never a zero-width interval: with no disagreement, ± the exact bound of 0 disagreements in 500
    same = [1.0] * 400 + [0.0] * 100
    low, high = proportion_difference_interval(same, same, 0.9)
    assert -low == high == pytest.approx(1 - 0.05 ** (1 / 500))


def test_the_old_rule_recommended_a_row_four_points_worse_the_new_one_calls_it_inconclusive():
    # like the tweets case: the prompting row 0.490, the fine-tuned one 0.522, McNemar p 0.21 ("not significantly worse")
    cheap, best = pairs(180, 65, 81, 174)
    assert binomtest(65, 146).pvalue > 0.05
    rows = judged([row("base", "optimized", cheap, None, 0), row("trained", "zero_shot", best, 70.0, 500)],
                  {"base/optimized/choice": cheap, "trained/zero_shot/choice": best})
    assert [r["vs_best"] for r in rows] == [INCONCLUSIVE, "best"]
    assert recommended(rows)["variant"] == "trained"
    text = recommendation(rows, MARGIN)
    assert text.startswith("**Recommendation: `trained/zero_shot/choice`**") and "the best" in text
    assert "Cheaper, not recommended: `base/optimized/choice` inconclusive (-0.032 [" in text


def test_a_truly_equivalent_cheaper_row_is_recommended_within_the_margin():
    cheap, best = pairs(15000, 100, 110, 4790)  # 20,000 rows, 0.05 points apart
    rows = judged([row("base", "zero_shot", cheap, None, 0), row("trained", "zero_shot", best, 70.0, 500)],
                  {"base/zero_shot/choice": cheap, "trained/zero_shot/choice": best})
    assert rows[0]["vs_best"] == NON_INFERIOR and rows[0]["diff_vs_best_ci_low"] > -MARGIN
    text = recommendation(rows, MARGIN)
    assert text.startswith("**Recommendation: `base/zero_shot/choice`**")
    assert "non-inferior to the best (`trained/zero_shot/choice`" in text and "within a margin of 0.02" in text


def test_a_row_shown_worse_beyond_the_margin_is_worse_and_a_small_sure_loss_is_non_inferior():
    far, best = pairs(300, 10, 150, 40)
    near_best = [1.0] * 4000 + [0.0] * 1000
    near = [0.0] * 40 + near_best[40:]  # 0.008 worse on 5,000 rows: shown worse, and shown within the margin too
    compared = compare_with_best({"far": by_id(far), "best": by_id(best)}, MARGIN, LEVEL, proportions=True)
    assert compared["far"].verdict == WORSE and compared["far"].high < 0
    compared = compare_with_best({"near": by_id(near), "best": by_id(near_best)}, MARGIN, LEVEL, proportions=True)
    assert compared["near"].high < 0 and compared["near"].verdict == NON_INFERIOR


def test_a_mean_gets_a_paired_bootstrap_interval_and_the_same_verdicts():
    rng = np.random.default_rng(3)
    best = rng.uniform(0.3, 0.9, 2000)
    close = np.clip(best - 0.002 + rng.normal(0, 0.02, 2000), 0, 1)  # ROUGE-L a hair lower, row by row
    loose = (best - 0.01 + rng.normal(0, 0.3, 2000))[:200]  # 200 rows, noisy: neither shown
    low, high = mean_difference_interval(list(close), list(best), 0.95)
    assert low < float(np.mean(close - best)) < high and high - low < 0.01
    compared = compare_with_best({"best": by_id(list(best)), "close": by_id(list(close)),
                                  "loose": by_id(list(loose))}, MARGIN, LEVEL, proportions=False)
    assert compared["close"].verdict == NON_INFERIOR and compared["close"].test == "paired bootstrap"
    assert compared["loose"].verdict == INCONCLUSIVE and compared["loose"].rows == 200


def test_bonferroni_makes_each_claim_stricter_as_the_table_grows():
    cheap, best = pairs(400, 5, 9, 86)  # 500 rows, 0.008 apart: non-inferior alone, not among many
    few = compare_with_best({"cheap": by_id(cheap), "best": by_id(best)}, MARGIN, LEVEL, proportions=True)
    others = {f"other{i}": by_id([0.0] * 500) for i in range(40)}
    many = compare_with_best({"cheap": by_id(cheap), "best": by_id(best), **others}, MARGIN, LEVEL, proportions=True)
    assert few["cheap"].level == LEVEL and many["cheap"].level == pytest.approx(LEVEL / 41)
    assert many["cheap"].low < few["cheap"].low
    assert few["cheap"].verdict == NON_INFERIOR and many["cheap"].verdict == INCONCLUSIVE


def test_the_default_datas_committed_outcomes_still_recommend_merged():
    """metrics/report.md's figures: trained and merged agree on all 500 test rows (0.892), int8_dynamic
    scores 0.866 with 8.2% of predictions changed (41 rows: 14 gained, 27 lost), prompting 0.814."""
    trained = [1.0] * 446 + [0.0] * 54
    int8 = [1.0] * 419 + [0.0] * 27 + [1.0] * 14 + [0.0] * 40
    prompting = [1.0] * 407 + [0.0] * 93
    rows = [row("base", "zero_shot", prompting, None, 0), row("trained", "zero_shot", trained, 69.36, 532),
            row("merged", "zero_shot", trained, 49.92, 532), row("int8_dynamic", "zero_shot", int8, 52.96, 534)]
    rows = judged(rows, {"base/zero_shot/choice": prompting, "trained/zero_shot/choice": trained,
                         "merged/zero_shot/choice": trained, "int8_dynamic/zero_shot/choice": int8})
    assert [r["vs_best"] for r in rows] == [WORSE, "best", NON_INFERIOR, INCONCLUSIVE]
    assert recommended(rows)["variant"] == "merged"
