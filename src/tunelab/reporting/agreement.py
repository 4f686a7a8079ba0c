"""Does a deployed variant answer like the float model it was made from, row by row?

Two variants can have the same accuracy and be right on different rows. This compares each
variant's predictions with the reference's (the merged float model, where it was evaluated) on
the same test rows: the share of rows with the same prediction under each scoring, and for
choice scoring how far the answer choices' log-probabilities moved (the logits agreement of a
GGUF or a quantized variant).
"""

import statistics
from pathlib import Path

from tunelab.io.jsonl import read_jsonl
from tunelab.reporting.markdown import pipe_table

MERGED = "merged"
"""The float variant every other deployment method is made from (tunelab.deploy.methods): the reference."""


def by_id(predictions: Path) -> dict[str, dict]:
    """An evaluate stage's predictions file, each row under its id."""
    return {str(row["id"]): row for row in read_jsonl(predictions, required=("id",))}


def agreement(theirs: dict[str, dict], mine: dict[str, dict]) -> dict:
    """Two variants' predictions (``by_id``) compared on the rows both hold."""
    shared = [key for key in mine if key in theirs]
    result = {"rows": len(shared)}
    for scoring in ("choice", "generate"):
        pairs = [(theirs[key][scoring], mine[key][scoring]) for key in shared
                 if scoring in theirs[key] and scoring in mine[key]]
        if not pairs:
            continue
        figures = {"same_prediction": statistics.fmean(answer(a) == answer(b) for a, b in pairs)}
        deltas = [abs(a["logprobs"][choice] - b["logprobs"][choice])
                  for a, b in pairs if "logprobs" in a and "logprobs" in b for choice in a["logprobs"]]
        if deltas:
            figures |= {"mean_abs_logprob_delta": statistics.fmean(deltas), "max_abs_logprob_delta": max(deltas)}
        result[scoring] = figures
    return result


def answer(output: dict):
    """What a scoring read from the model: a label (``prediction``), or a generative task's ``answer``."""
    return output["prediction"] if "prediction" in output else output["answer"]


def agreement_table(agreements: dict[str, dict], reference: str) -> str:
    """One row per variant: rows compared, same prediction per scoring, |Δ log p| of the choices."""
    lines = []
    for name, a in agreements.items():
        choice, generate = a.get("choice", {}), a.get("generate", {})
        moved = (f"{choice['mean_abs_logprob_delta']:.4f} / {choice['max_abs_logprob_delta']:.4f}"
                 if "mean_abs_logprob_delta" in choice else "")
        lines.append([name, a["rows"], share(choice), moved, share(generate)])
    return pipe_table(["variant", "rows", f"same choice prediction as {reference}",
                       "mean / max \\|Δ log p\\| of the choices", f"same generated answer as {reference}"], lines)


def share(figures: dict) -> str:
    return f"{figures['same_prediction']:.1%}" if "same_prediction" in figures else ""
