"""Rewards for GRPO and RLOO: plain functions of one completion, registered by name, weighted by config.

| reward  | what it pays                                                                          | range   |
|---------|---------------------------------------------------------------------------------------|---------|
| correct | the task's own score of the answer (Task.score_answer: the label, the number, SQuAD's  | [0, 1]  |
|         | token F1, ROUGE-L)                                                                    |         |
| format  | 2/3 when an answer can be read at all (a choice named, a number stated), 1 when it    | [0, 1]  |
|         | also stands on a line after the answer marker ("Answer:") the task's reasoning asks for|         |
| length  | minus the share of the token budget the completion used                               | [-1, 0] |

Partial credit matters: GRPO learns from the differences within a group of sampled answers, so
a group whose answers all score the same teaches nothing (TRL logs that share as
``frac_reward_zero_std``). A new reward is one ``REWARDS.register(Reward(...))`` here.
"""

import re
from dataclasses import dataclass
from typing import Callable

from tunelab.errors import TunelabError
from tunelab.evaluation.tasks import Task, answer_of
from tunelab.registry import Registry

_MARKER = re.compile(r"^[ \t]*answer\s*:", re.IGNORECASE | re.MULTILINE)


@dataclass(frozen=True)
class Completion:
    """One sampled answer as a reward sees it."""

    text: str
    tokens: int
    budget: int
    """The most tokens it could have had (align.max_completion_length)."""


@dataclass(frozen=True)
class Reward:
    name: str
    score: Callable[[Task, Completion, dict], float]
    """(the task, one completion, its prompt's row: references, choices) → its reward."""


REWARDS: Registry[Reward] = Registry("align.rewards")


def correct(task: Task, completion: Completion, row: dict) -> float:
    return task.score_answer(answer_of(task, completion.text, row["choices"]), row["references"])


def well_formed(task: Task, completion: Completion, row: dict) -> float:
    if answer_of(task, completion.text, row["choices"]) is None:
        return 0.0
    return 1.0 if _MARKER.search(completion.text) else 2 / 3


def length(task: Task, completion: Completion, row: dict) -> float:
    return -completion.tokens / completion.budget


REWARDS.register(Reward("correct", correct))
REWARDS.register(Reward("format", well_formed))
REWARDS.register(Reward("length", length))


def trl_reward(reward: Reward, task: Task, budget: int) -> Callable[..., list[float]]:
    """The reward as TRL calls one: the batch's prompts and completions, the dataset's other columns
    as lists (references, choices); named so TRL logs it as ``rewards/NAME/mean``."""

    def score(prompts: list, completions: list, completion_ids: list, references: list, choices: list, **_) -> list[float]:
        return [reward.score(task, Completion(text, len(ids), budget), {"references": refs, "choices": options})
                for text, ids, refs, options in zip(completions, completion_ids, references, choices, strict=True)]

    score.__name__ = reward.name
    return score


def reward_functions(weights: dict[str, float], task: Task, budget: int) -> tuple[list[Callable], list[float]]:
    """The configured rewards as TRL reward functions, and their weights (unknown names refused, listing them)."""
    names = list(weights)
    return [trl_reward(REWARDS[name], task, budget) for name in names], [float(weights[name]) for name in names]


def check_rewards(functions: list[Callable], rows: list[dict]) -> None:
    """Call every reward on the first rows' gold targets before training: one that returns the wrong
    number of values, or not numbers, is refused by name here rather than minutes into training."""
    sample = rows[:2]
    texts = [row["target"] for row in sample]
    columns = {"references": [row["references"] for row in sample], "choices": [row["choices"] for row in sample]}
    for function in functions:
        values = function(prompts=[row["prompt"] for row in sample], completions=texts,
                          completion_ids=[[0] * max(1, len(text.split())) for text in texts], **columns)
        if not isinstance(values, list) or len(values) != len(sample):
            count = len(values) if isinstance(values, list) else type(values).__name__
            raise TunelabError(f"align.rewards.{function.__name__}: returned {count} values for {len(sample)} "
                               "completions; a reward returns one float per completion")
        if not all(isinstance(value, (int, float)) for value in values):
            raise TunelabError(f"align.rewards.{function.__name__}: returned {values!r}; a reward returns floats")
