"""Task types, one registry entry each: how an answer is read out of generated text, whether
sampled answers can be voted on, and how answers are scored against references.

| task          | answer read from the text                        | headline (95% interval)  |
|---------------|--------------------------------------------------|--------------------------|
| classification| the answer choice named (evaluation/parsing.py)  | accuracy (Wilson)        |
| generation    | after the last "Answer:" line, else the whole text | ROUGE-L (bootstrap)    |
| extractive_qa | after the last "Answer:", else the first line     | exact match (Wilson), F1 |
| math          | the final number (evaluation/answers.py)         | accuracy (Wilson)        |

Classification is scored by the evaluator's choice and generate scorings against labels; the
generative tasks here score generated text against each example's references. Each task also
says what chain-of-thought asks for (its reasoning instruction, ending with the marker its
answer reader looks for). A new task is one ``TASKS.register(Task(...))`` here plus its conf/data,
conf/prompt and conf/eval files.
"""

import re
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass

from tunelab.evaluation.answers import math_answer, normalize_span, span_f1
from tunelab.evaluation.parsing import parse_choice
from tunelab.evaluation.text_metrics import extractive_qa_report, generation_report, math_report, rouge_scores
from tunelab.registry import Registry

_ANSWER_MARKER = re.compile(r"^\s*(?:the\s+answer\s+is|answer\s*:)\s*", re.IGNORECASE)
_ANSWER_LINE = re.compile(r"^[ \t]*answer\s*:[ \t]*", re.IGNORECASE | re.MULTILINE)


@dataclass(frozen=True)
class Task:
    name: str
    headline: str
    """The metric a report and a sweep compare first."""
    scorings: tuple[str, ...]
    """choice needs answer choices (classification); every task can generate."""
    read_answer: Callable[[str], str | None] = lambda text: text.strip() or None
    """Generated text → the answer (normalised where the task compares normalised answers); None: no answer."""
    vote_key: Callable[[str], str] | None = None
    """How sampled answers are grouped for self-consistency's vote; None: free text is not voted on."""
    report: Callable[[list[list[str]], list[str | None], int], dict] | None = None
    """(references per example, answers, seed) → metrics with intervals."""
    table_metrics: tuple[str, ...] = ()
    """The metrics the report's tables show, the headline first (each may have a ``_ci95`` interval)."""
    reasoning: str = ""
    """What a derived chain-of-thought template asks after the prompt (Jinja, like a template): reason,
    then the marker ``read_answer`` looks for."""
    score_answer: Callable[[str | None, list[str]], float] = lambda answer, references: float(answer in references)
    """One answer (as :func:`answer_of` reads it) against its references → a score in [0, 1]: the
    alignment phase's correctness reward and its test of a sampled answer (tunelab.alignment).
    Where the headline is all-or-nothing but a graded score exists (SQuAD's token F1), the graded one:
    a group of sampled answers that all score the same teaches GRPO nothing."""

    @property
    def classifies(self) -> bool:
        """Answers are one of the data's labels, scored by their choices' likelihood too (else free
        text, generated and read); the data side's counterpart is DataConfig.classifies."""
        return "choice" in self.scorings


TASKS: Registry[Task] = Registry("data.task")


def span_answer(text: str) -> str | None:
    """An extractive answer: the line after the last "Answer:" line marker (chain-of-thought ends so),
    else the first non-empty line, without a leading "the answer is"."""
    markers = list(_ANSWER_LINE.finditer(text))
    rest = text[markers[-1].end():] if markers else text
    line = next((line for line in rest.splitlines() if line.strip()), "")
    return _ANSWER_MARKER.sub("", line).strip().rstrip(".") or None


def free_text_answer(text: str) -> str | None:
    """Free text: what follows the last "Answer:" line marker (chain-of-thought ends so), else all of it."""
    markers = list(_ANSWER_LINE.finditer(text))
    return (text[markers[-1].end():] if markers else text).strip() or None


CLASSIFICATION_REASONING = ('Think it through in one or two short sentences, then end with a line "Answer: <choice>", '
                            '<choice> being one of: {{ answer_choices | join(", ") }}.')
"""Classification's chain-of-thought instruction; evaluation/parsing.py reads the marker."""

def rouge_l(answer: str | None, references: list[str]) -> float:
    return rouge_scores([references], [answer or ""])["rougeL"][0]


def same_number(answer: str | None, references: list[str]) -> float:
    return float(answer is not None and answer == math_answer(references[0]))


TASKS.register(Task("classification", "accuracy", ("choice", "generate"), table_metrics=("accuracy", "macro_f1"),
                    reasoning=CLASSIFICATION_REASONING))
TASKS.register(Task("generation", "rougeL", ("generate",), free_text_answer, report=generation_report,
                    table_metrics=("rougeL", "rouge1", "chrf", "output_words_mean"), score_answer=rouge_l,
                    reasoning='First plan your reply in one or two short sentences, then write it after a line "Answer:".'))
TASKS.register(Task("extractive_qa", "exact_match", ("generate",), span_answer, normalize_span, extractive_qa_report,
                    table_metrics=("exact_match", "f1", "output_words_mean"),
                    score_answer=lambda answer, references: span_f1(references, answer or ""),
                    reasoning='Think it through in one or two short sentences, then end with a line "Answer: <the '
                              'shortest span of the passage that answers the question>".'))
TASKS.register(Task("math", "accuracy", ("generate",), math_answer, lambda answer: answer, math_report,
                    table_metrics=("accuracy", "output_words_mean"), score_answer=same_number,
                    reasoning='Think step by step, then end with a line "Answer: <the final number>".'))


def answer_of(task: Task, text: str, choices: list[str]) -> str | None:
    """The answer one generated text gives: the choice it names where the row has answer choices
    (classification), else what the task's reader finds; None when it gives none."""
    return parse_choice(text, choices) if choices else task.read_answer(text)


def vote(answers: list[str | None], key: Callable[[str], str]) -> tuple[str | None, float]:
    """Self-consistency: the answer most samples agree on (compared by ``key``), and its share of all
    samples (unparseable ones included). A tie goes to the answer sampled first, so the vote is
    deterministic."""
    keys = [key(answer) if answer is not None else None for answer in answers]
    counts = Counter(k for k in keys if k is not None)
    if not counts:
        return None, 0.0
    winner = max(counts, key=lambda k: (counts[k], -keys.index(k)))
    return answers[keys.index(winner)], counts[winner] / len(answers)


def score_generated(task: Task, references: list[list[str]], samples: list[list[str]], seed: int) -> tuple[list[dict], dict]:
    """Generated texts (one or more samples per example) → per-example answers and the task's metrics.

    With several samples the task's vote decides the answer (maj@k), and the mean vote share is
    reported; a task without a vote (free text) is scored on its first sample. Every task reports
    its unparseable share (no answer read) and how much the model wrote (``output_words_mean``,
    the first sample's words, beside the report's ``answer_words_mean`` where the task has one).
    """
    outputs = []
    for texts in samples:
        answers = [task.read_answer(text) for text in texts]
        output = {"texts": texts, "answer": answers[0]}
        if len(texts) > 1 and task.vote_key is not None:
            output["answer"], output["vote_share"] = vote(answers, task.vote_key)
            output["votes"] = answers
        outputs.append(output)
    answers = [output["answer"] for output in outputs]
    metrics = task.report(references, answers, seed)
    for output, score in zip(outputs, metrics.pop("example_scores"), strict=True):
        output["score"] = round(float(score), 4)  # the headline, per example: for paired comparisons
    metrics["unparseable_share"] = sum(answer is None for answer in answers) / len(answers)
    metrics["output_words_mean"] = sum(len(texts[0].split()) for texts in samples) / len(samples)
    if any("vote_share" in output for output in outputs):
        metrics["mean_vote_share"] = sum(output["vote_share"] for output in outputs) / len(outputs)
    return outputs, metrics
