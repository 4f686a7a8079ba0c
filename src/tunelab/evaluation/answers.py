"""Reading a task's answer out of generated text: math final answers and SQuAD-normalised spans.

Hand-written because no maintained library does exactly this offline: lm-evaluation-harness's
GSM8K filters are regexes inside its YAML task files, and HF ``evaluate`` fetches its SQuAD
script from the hub at load time. The rules follow those references and are stated here.
"""

import re
import string
from collections import Counter
from fractions import Fraction

# A number as people write it: 1,234 (thousands groups), 3.5, .5, -2, 3/4, after an optional $.
_NUMBER = re.compile(r"(?<![\w.])-?\$?(?:\d{1,3}(?:,\d{3})+|\d+)(?:\.\d+)?(?:/\d+)?(?![\d/])|(?<![\w.])-?\.\d+")
_PUNCTUATION = set(string.punctuation)
# Explicit final-answer markers (GSM8K's "####", "the answer is", "Answer:", \boxed{}); the last one in a text decides.
_MARKER = re.compile(r"####|the\s+(?:final\s+)?answer\s+is|answer\s*:|\\boxed\{", re.IGNORECASE)


def normalize_number(text: str) -> str | None:
    """One spelling per value, so equal numbers compare equal as text: "1,000" → "1000",
    "$5.50" → "5.5", "3/4" → "0.75", "1/3" stays "1/3", "-0" → "0"; None when not a number."""
    cleaned = text.strip().replace(",", "").replace("$", "").rstrip(".")
    try:
        value = Fraction(cleaned)
    except (ValueError, ZeroDivisionError):
        return None
    if value.denominator == 1:
        return str(value.numerator)
    decimal = float(value)
    return f"{value.numerator}/{value.denominator}" if Fraction(repr(decimal)) != value else repr(decimal)


def math_answer(text: str) -> str | None:
    """The final numeric answer of a worked solution, normalised; None when it states none.

    The rule, in order: the first number after the last explicit marker ("####", "the answer
    is", "Answer:", "\\boxed{"); otherwise the last number in the text (a solution ends with its
    result).
    """
    markers = list(_MARKER.finditer(text))
    if markers:
        after = _NUMBER.search(text, markers[-1].end())
        if after:
            return normalize_number(after.group())
    numbers = _NUMBER.findall(text)
    return normalize_number(numbers[-1]) if numbers else None


def normalize_span(text: str) -> str:
    """SQuAD v1.1's normalisation: lower case, no punctuation, no articles, single spaces."""
    text = "".join(char for char in text.lower() if char not in _PUNCTUATION)
    text = re.sub(r"\b(a|an|the)\b", " ", text)
    return " ".join(text.split())


def span_exact_match(golds: list[str], predicted: str) -> float:
    """1.0 when the prediction equals any gold answer after normalisation (SQuAD's max over golds)."""
    return float(any(normalize_span(gold) == normalize_span(predicted) for gold in golds))


def _token_f1(gold: str, predicted: str) -> float:
    gold_tokens, predicted_tokens = normalize_span(gold).split(), normalize_span(predicted).split()
    common = sum((Counter(gold_tokens) & Counter(predicted_tokens)).values())
    if common == 0:
        return 0.0
    precision, recall = common / len(predicted_tokens), common / len(gold_tokens)
    return 2 * precision * recall / (precision + recall)


def span_f1(golds: list[str], predicted: str) -> float:
    """SQuAD's token F1: harmonic mean of word precision and recall, the best over gold answers."""
    return max(_token_f1(gold, predicted) for gold in golds)
