"""Metrics of generated text against references, from the field's own libraries.

ROUGE comes from ``rouge-score`` (Google's reimplementation of the original Perl script),
chrF and BLEU from ``sacrebleu`` (the reference implementation people quote); exact match and
token F1 use SQuAD's normalisation (tunelab.evaluation.answers). HF ``evaluate`` would wrap
the same code but fetches it from the hub at load time, which fails offline.

Each example may have several references; per-example scores take the best one (SQuAD's and
rouge-score's ``score_multi`` convention), corpus scores (BLEU, chrF) use them all. Headline
means come with a 95% percentile-bootstrap interval over examples; proportions with Wilson's.
Each report also gives its headline per example (``example_scores``), which paired comparisons
of two variants on the same rows need.
"""

import numpy as np

from tunelab.evaluation.answers import math_answer, span_exact_match, span_f1
from tunelab.evaluation.metrics import CONFIDENCE, RESAMPLES, Interval, wilson_interval

ROUGE_TYPES = ("rouge1", "rouge2", "rougeL")


def bootstrap_mean_interval(values: list[float], resamples: int = RESAMPLES, seed: int = 0,
                            confidence: float = CONFIDENCE) -> Interval:
    """Percentile bootstrap interval of the mean of per-example scores (scipy.stats.bootstrap)."""
    from scipy.stats import bootstrap

    scores = np.asarray(values, dtype=float)
    if np.ptp(scores) == 0:  # every resample has the same mean; scipy warns of a degenerate distribution
        return Interval(float(scores[0]), float(scores[0]))
    interval = bootstrap((scores,), np.mean, n_resamples=resamples, method="percentile", confidence_level=confidence,
                         random_state=np.random.default_rng(seed)).confidence_interval
    return Interval(float(interval.low), float(interval.high))


def mean_with_interval(name: str, values: list[float], seed: int) -> dict:
    interval = bootstrap_mean_interval(values, seed=seed)
    return {name: float(np.mean(values)), f"{name}_ci95": [interval.low, interval.high],
            f"{name}_ci_method": f"percentile bootstrap, {RESAMPLES} resamples"}


def proportion_with_interval(name: str, hits: list[float]) -> dict:
    interval = wilson_interval(int(sum(hits)), len(hits))
    return {name: sum(hits) / len(hits), f"{name}_ci95": [interval.low, interval.high], f"{name}_ci_method": "wilson"}


def rouge_scores(references: list[list[str]], outputs: list[str]) -> dict[str, list[float]]:
    """Per example, the ROUGE F-measure against its best reference (Porter stemming, as the original)."""
    from rouge_score import rouge_scorer

    scorer = rouge_scorer.RougeScorer(list(ROUGE_TYPES), use_stemmer=True)
    scores = [scorer.score_multi(golds, output) for golds, output in zip(references, outputs, strict=True)]
    return {kind: [score[kind].fmeasure for score in scores] for kind in ROUGE_TYPES}


def corpus_scores(references: list[list[str]], outputs: list[str]) -> dict[str, float]:
    """sacrebleu's corpus chrF and BLEU (0-100); rows with fewer references pad with None, which
    sacrebleu skips."""
    import sacrebleu

    streams = [[golds[i] if i < len(golds) else None for golds in references] for i in range(max(map(len, references)))]
    return {"chrf": sacrebleu.corpus_chrf(outputs, streams).score, "bleu": sacrebleu.corpus_bleu(outputs, streams).score}


def generation_report(references: list[list[str]], answers: list[str | None], seed: int = 0) -> dict:
    """Free text against references: ROUGE-1/2/L (ROUGE-L the headline, with its interval), chrF,
    BLEU, exact match and token F1, and how long the answers are (in words). No answer (None)
    scores as an empty text."""
    if not answers:
        raise ValueError("no outputs to score")
    outputs = [answer or "" for answer in answers]
    rouge = rouge_scores(references, outputs)
    report = {"examples": len(outputs), **mean_with_interval("rougeL", rouge["rougeL"], seed),
              "rouge1": float(np.mean(rouge["rouge1"])), "rouge2": float(np.mean(rouge["rouge2"])),
              "example_scores": rouge["rougeL"]}
    report |= corpus_scores(references, outputs)
    report |= {"exact_match": float(np.mean([span_exact_match(g, o) for g, o in zip(references, outputs)])),
               "token_f1": float(np.mean([span_f1(g, o) for g, o in zip(references, outputs)])),
               "answer_words_mean": float(np.mean([len(o.split()) for o in outputs]))}
    return report


def extractive_qa_report(references: list[list[str]], answers: list[str | None], seed: int = 0) -> dict:
    """SQuAD's exact match (Wilson interval) and token F1 (bootstrap interval), best over gold
    answers; no answer (None) scores as an empty one."""
    if not answers:
        raise ValueError("no answers to score")
    answers = [answer or "" for answer in answers]
    matches = [span_exact_match(g, a) for g, a in zip(references, answers, strict=True)]
    f1s = [span_f1(g, a) for g, a in zip(references, answers)]
    return {"examples": len(answers), **proportion_with_interval("exact_match", matches),
            **mean_with_interval("f1", f1s, seed), "answer_words_mean": float(np.mean([len(a.split()) for a in answers])),
            "example_scores": matches}


def math_report(references: list[list[str]], answers: list[str | None], seed: int = 0) -> dict:
    """Accuracy of final numeric answers against each reference's final answer (a worked solution
    ending "#### 72", or just "72"; both normalised by tunelab.evaluation.answers), its Wilson
    interval, and the share of outputs that state no number (counted wrong). ``seed`` is unused:
    the interval needs no resampling (the signature is every task report's)."""
    if not answers:
        raise ValueError("no answers to score")
    golds = [math_answer(texts[0]) for texts in references]
    hits = [float(answer is not None and answer == gold) for gold, answer in zip(golds, answers, strict=True)]
    return {"examples": len(answers), **proportion_with_interval("accuracy", hits),
            "unparseable_share": sum(answer is None for answer in answers) / len(answers), "example_scores": hits}
