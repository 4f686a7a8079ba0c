"""The whole configuration checked before any stage works: every section's types and ranges,
and every name a registry must know (raw data format, strategy, deployment methods). The check stage runs it.

Kept out of tunelab.config, which every stage imports: a stage depends on the registries it
uses, not on all of them.
"""

from typing import Any

from tunelab.config.load import check_known_sections, to_section
from tunelab.config.schema import SECTIONS
from tunelab.data.readers import READERS
from tunelab.deploy.methods import METHODS
from tunelab.prompts.templates import PromptTemplate, check_choices_fit
from tunelab.training.strategies import check_strategy_config


def validate_config(params: dict[str, Any]) -> None:
    check_known_sections(params)
    sections = {name: to_section(cls, name, params.get(name)) for name, cls in SECTIONS.items()}
    READERS[sections["data"].format]  # an unknown name is refused here, listing the registered ones
    check_strategy_config(sections["strategy"])
    for name in sections["quantize"].variants:
        METHODS[name]  # an unknown name is refused here, listing the registered ones
    check_templates_answer_labels(sections)


def check_templates_answer_labels(sections: dict) -> None:
    """Every template that scores or trains on answer choices (the training prompt and each
    prompting method's) names one choice per label of data.labels; refused here, before a stage
    trains for minutes and evaluation then finds the mismatch."""
    labels = sections["data"].labels
    templates = {"prompt": sections["prompt"]}
    templates |= {f"eval.prompting.{name}.template": method.template
                  for name, method in sections["eval"].prompting.items() if method.template is not None}
    for key, config in templates.items():
        choices = PromptTemplate(config).static_choices()
        if choices is not None:  # None: they depend on the row, and are checked as each row is rendered
            hint = ("; write a conf/prompt file whose answer_choices name your labels and pick it with -S prompt=NAME"
                    if key == "prompt" else f"; or set {key}=null to derive it from the training prompt")
            check_choices_fit(choices, labels, f"{key}: template {config.name!r}", hint=hint)
