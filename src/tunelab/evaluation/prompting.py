"""A prompting method applied to test rows: the exact text each model reads, and its choices.

Rendering goes through the same machinery as the format stage (templates.py, then chat.py),
so an evaluated prompt and a trained prompt cannot drift apart. Few-shot demonstrations are
solved train examples in earlier chat turns; every row's prompt then starts with the same
demonstrations, which the scorer computes once (see scoring.SharedPrefix). Classification rows
become an ``EvalPrompt`` (text, label, choices); the generative tasks' rows a ``ChatPrompt``
(text, references), their earlier turns included.
"""

import random
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace

from tunelab.config.schema import GENERATIVE_METHODS, PromptConfig, PromptingConfig
from tunelab.errors import TunelabError
from tunelab.evaluation.tasks import Task
from tunelab.prompts.chat import Demonstration, model_prompt
from tunelab.prompts.formatting import template_fields
from tunelab.prompts.templates import SEPARATOR, PromptTemplate, check_choices_fit

Demonstrations = Sequence[dict] | Callable[[dict], Sequence[dict]]
"""The train rows shown before a row: the same for every row, or each row's own (a row → its rows)."""


def demonstrations_of(shots: Demonstrations) -> Callable[[dict], Sequence[dict]]:
    return shots if callable(shots) else lambda row: shots


@dataclass(frozen=True)
class EvalPrompt:
    id: str
    label: str
    text: str
    """The prompt as the model reads it (chat template applied, demonstrations included)."""
    choices: list[str]
    """Answer choices in data.labels order: choices[i] answers labels[i]."""


@dataclass(frozen=True)
class ChatPrompt:
    id: str
    text: str
    """The chat as the model reads it before its answer (chat template applied, demonstrations and
    the example's earlier turns included)."""
    references: list[str]
    """The acceptable answers to the last turn."""


def method_template(training: PromptConfig, prompting: PromptingConfig, task: Task) -> PromptConfig:
    """The template a prompting method reads: its own, or one derived from the training prompt.

    Derived, so a user's one template serves every method: few-shot adds demonstrations (see
    build_prompts), role prompting the method's persona as the system message, chain-of-thought
    and self-consistency the task's reasoning instruction, which ends with the answer marker.
    """
    if prompting.template is not None:
        return prompting.template
    derived = training
    if prompting.persona:
        derived = replace(derived, name=f"{derived.name}+persona", system=prompting.persona)
    if prompting.method in GENERATIVE_METHODS:
        prompt, _, target = derived.template.partition(SEPARATOR)
        derived = replace(derived, name=f"{derived.name}+reasoning",
                          template=f"{prompt.rstrip()}\n{task.reasoning}\n{SEPARATOR} Answer: {target.strip()}")
    return derived


def pick_demonstrations(train_rows: list[dict], labels: list[str], shots: int, seed: int) -> list[dict]:
    """``shots`` train rows, as balanced across labels as ``shots`` allows, in seeded order.

    Labels take turns (so 4 shots of 2 labels are 2 + 2); the picked rows are shuffled so the
    last demonstration, which models copy most, is not always the same label. Without labels (a
    generative task) they are a seeded sample.
    """
    rng = random.Random(seed)
    if not labels:
        if shots > len(train_rows):
            raise TunelabError(f"few-shot: {shots} demonstrations need more than the {len(train_rows)} train rows")
        return rng.sample(train_rows, shots)
    pools = {label: [row for row in train_rows if row["label"] == label] for label in labels}
    for pool in pools.values():
        rng.shuffle(pool)
    picked = []
    for turn in range(shots):
        label = labels[turn % len(labels)]
        if not pools[label]:
            raise TunelabError(f"few-shot: {shots} demonstrations need more train rows labelled {label!r} than the "
                               f"{sum(r['label'] == label for r in train_rows)} there are")
        picked.append(pools[label].pop())
    rng.shuffle(picked)
    return picked


def render_demonstrations(rows: list[dict], template: PromptTemplate, labels: list[str]) -> list[Demonstration]:
    """Each row as (prompt, target); ``labels`` empty: generative rows, rendered from their own fields."""
    demonstrations = []
    for row in rows:
        rendered = template.render(template_fields(row, labels), row=f"train {row['id']}")
        if rendered.target is None:
            raise TunelabError(f"prompt {template.name!r}: few-shot demonstrations need the template's '|||' target")
        demonstrations.append((rendered.prompt, rendered.target))
    return demonstrations


class RenderedDemonstrations:
    """Each row's demonstrations rendered through the template, each distinct set once."""

    def __init__(self, shots: Demonstrations, template: PromptTemplate, labels: list[str]):
        self.rows_of, self.template, self.labels = demonstrations_of(shots), template, labels
        self.rendered: dict[tuple, list[Demonstration]] = {}

    def __call__(self, row: dict) -> list[Demonstration]:
        rows = list(self.rows_of(row))
        key = tuple(str(shot["id"]) for shot in rows)
        if key not in self.rendered:
            self.rendered[key] = render_demonstrations(rows, self.template, self.labels)
        return self.rendered[key]


def build_prompts(rows: list[dict], config: PromptConfig, labels: list[str], tokenizer,
                  demonstration_rows: Demonstrations = ()) -> list[EvalPrompt]:
    """Render every test row; the choices must answer every label, or scoring means nothing."""
    if not config.answer_choices:
        check_choices_fit([], labels, f"prompt {config.name!r}")
    template = PromptTemplate(config)
    demonstrations = RenderedDemonstrations(demonstration_rows, template, labels)
    prompts = []
    for row in rows:
        rendered = template.render(template_fields(row, labels), row=f"test {row['id']}")
        check_choices_fit(rendered.choices, labels, f"prompt {config.name!r}", on_row=f" on test row {row['id']}")
        text = model_prompt(tokenizer, rendered.prompt, config.system, config.use_chat_template, demonstrations(row))
        prompts.append(EvalPrompt(id=str(row["id"]), label=row["label"], text=text, choices=rendered.choices))
    return prompts


def build_chat_prompts(rows: list[dict], config: PromptConfig, tokenizer,
                       demonstration_rows: Demonstrations = ()) -> list[ChatPrompt]:
    """Render every test row of a generative task: demonstrations, the row's earlier turns, its prompt."""
    template = PromptTemplate(config)
    demonstrations = RenderedDemonstrations(demonstration_rows, template, labels=[])
    prompts = []
    for row in rows:
        rendered = template.render(row, row=f"test {row['id']}")
        text = model_prompt(tokenizer, rendered.prompt, config.system, config.use_chat_template, demonstrations(row),
                            history=row.get("history", []), tool_turns=row.get("tool_turns", []))
        prompts.append(ChatPrompt(id=str(row["id"]), text=text, references=row["references"]))
    return prompts
