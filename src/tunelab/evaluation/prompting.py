"""A prompting method applied to test rows: the exact text each model reads, and its choices.

Rendering goes through the same machinery as the format stage (templates.py, then chat.py),
so an evaluated prompt and a trained prompt cannot drift apart. Few-shot demonstrations are
solved train examples in earlier chat turns; every row's prompt then starts with the same
demonstrations, which the scorer computes once (see scoring.SharedPrefix).
"""

import random
from dataclasses import dataclass, replace

from tunelab.config.schema import GENERATIVE_METHODS, PromptConfig, PromptingConfig
from tunelab.errors import TunelabError
from tunelab.prompts.chat import Demonstration, model_prompt
from tunelab.prompts.formatting import template_fields
from tunelab.prompts.templates import SEPARATOR, PromptTemplate, check_choices_fit

REASONING = ('Think it through in one or two short sentences, then end with a line "Answer: <choice>", '
             '<choice> being one of: {{ answer_choices | join(", ") }}.')
"""What a derived chain-of-thought template asks after the training prompt; parsing.py reads the marker."""


@dataclass(frozen=True)
class EvalPrompt:
    id: str
    label: str
    text: str
    """The prompt as the model reads it (chat template applied, demonstrations included)."""
    choices: list[str]
    """Answer choices in data.labels order: choices[i] answers labels[i]."""


def method_template(training: PromptConfig, prompting: PromptingConfig) -> PromptConfig:
    """The template a prompting method reads: its own, or one derived from the training prompt.

    Derived, so a user's one template serves every method: few-shot adds demonstrations (see
    build_prompts), role prompting the method's persona as the system message, chain-of-thought
    and self-consistency a reasoning instruction ending with the answer marker.
    """
    if prompting.template is not None:
        return prompting.template
    derived = training
    if prompting.persona:
        derived = replace(derived, name=f"{derived.name}+persona", system=prompting.persona)
    if prompting.method in GENERATIVE_METHODS:
        prompt, _, target = derived.template.partition(SEPARATOR)
        derived = replace(derived, name=f"{derived.name}+reasoning",
                          template=f"{prompt.rstrip()}\n{REASONING}\n{SEPARATOR} Answer: {target.strip()}")
    return derived


def pick_demonstrations(train_rows: list[dict], labels: list[str], shots: int, seed: int) -> list[dict]:
    """``shots`` train rows, as balanced across labels as ``shots`` allows, in seeded order.

    Labels take turns (so 4 shots of 2 labels are 2 + 2); the picked rows are shuffled so the
    last demonstration, which models copy most, is not always the same label.
    """
    rng = random.Random(seed)
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
    demonstrations = []
    for row in rows:
        rendered = template.render(template_fields(row, labels), row=f"train {row['id']}")
        if rendered.target is None:
            raise TunelabError(f"prompt {template.name!r}: few-shot demonstrations need the template's '|||' target")
        demonstrations.append((rendered.prompt, rendered.target))
    return demonstrations


def build_prompts(rows: list[dict], config: PromptConfig, labels: list[str], tokenizer,
                  demonstration_rows: list[dict] = ()) -> list[EvalPrompt]:
    """Render every test row; the choices must answer every label, or scoring means nothing."""
    if not config.answer_choices:
        check_choices_fit([], labels, f"prompt {config.name!r}")
    template = PromptTemplate(config)
    demonstrations = render_demonstrations(list(demonstration_rows), template, labels)
    prompts = []
    for row in rows:
        rendered = template.render(template_fields(row, labels), row=f"test {row['id']}")
        check_choices_fit(rendered.choices, labels, f"prompt {config.name!r}", on_row=f" on test row {row['id']}")
        text = model_prompt(tokenizer, rendered.prompt, config.system, config.use_chat_template, demonstrations)
        prompts.append(EvalPrompt(id=str(row["id"]), label=row["label"], text=text, choices=rendered.choices))
    return prompts
