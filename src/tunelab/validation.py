"""The whole configuration checked before any stage works: every section's types and ranges,
every name a registry must know (raw data format, layout, task, strategy, deployment methods,
alignment method and rewards),
and that the prompting methods and templates fit the task. The check stage runs it.

Kept out of tunelab.config, which every stage imports: a stage depends on the registries it
uses, not on all of them.
"""

from typing import Any

from tunelab.alignment.methods import ALIGN_METHODS
from tunelab.alignment.rewards import REWARDS
from tunelab.config.load import check_known_sections, to_section
from tunelab.config.schema import SECTIONS, DataConfig
from tunelab.data.layouts import LAYOUTS
from tunelab.data.readers import READERS
from tunelab.deploy.methods import METHODS
from tunelab.errors import TunelabError
from tunelab.evaluation.tasks import TASKS
from tunelab.models.base import chat_template_source
from tunelab.prompts.templates import PromptTemplate, check_choices_fit
from tunelab.training.strategies import check_peft_options, check_strategy_config


def validate_config(params: dict[str, Any]) -> None:
    check_known_sections(params)
    sections = {name: to_section(cls, name, params.get(name)) for name, cls in SECTIONS.items()}
    data = sections["data"]
    check_reading(data)
    for name, extra in sections["eval"].extra_test_sets.items():
        try:
            check_reading(extra.data_config(data))
        except TunelabError as error:
            raise TunelabError(f"config key eval.extra_test_sets.{name}: {str(error).removeprefix('config key ')}"
                               " (the main data's, with the set's own data keys)") from None
    check_strategy_config(sections["strategy"])
    check_passthroughs(sections)
    if sections["model"].chat_template is not None:
        chat_template_source(sections["model"].chat_template)
    for name in sections["quantize"].variants:
        METHODS[name]  # an unknown name is refused here, listing the registered ones
    check_prompting_fits_task(sections)
    check_alignment(sections["align"])
    if data.classifies and not data.infers_labels:  # auto: the names are known once prepare has read the file
        check_templates_answer_labels(sections)
    else:
        check_templates_are_chats(sections)


def check_passthroughs(sections: dict) -> None:
    """The options passed as they are to transformers, TRL and peft name their real fields. Their
    classes are imported only where such options are set: most runs set none, and the imports cost
    seconds of the check stage."""
    train, align = sections["train"], sections["align"]
    if train.extra_args:
        from tunelab.training.run import check_extra_args

        check_extra_args(train)
    if align.lora.peft:
        check_peft_options("align.lora", align.lora)
    if align.extra_args:
        from pathlib import Path

        from tunelab.alignment.run import trl_arguments
        from tunelab.config.passthrough import check_passthrough

        method = ALIGN_METHODS[align.method]
        if method.trainer is None:
            raise TunelabError(f"config key align.extra_args: align={align.method} runs no trainer to pass them to")
        _, config_class = method.trainer()
        check_passthrough("align.extra_args", align.extra_args, config_class,
                          trl_arguments(method, align, Path(".")), instead=" (from an align key)")


def check_alignment(align) -> None:
    """The alignment method and each reward are registered ones, and the settings fit the method."""
    method = ALIGN_METHODS[align.method]  # an unknown name is refused here, listing the registered ones
    method.check(align)
    if method.rewarded:
        for name in align.rewards:
            REWARDS[name]


def check_reading(data: DataConfig) -> None:
    """The raw format and layout are registered ones (an unknown name is refused, listing them)."""
    READERS[data.format]
    if data.layout is not None:
        LAYOUTS[data.layout]


def check_prompting_fits_task(sections: dict) -> None:
    """Each prompting method scores the way its task can: a generative task has no answer choices
    to score by likelihood, so a classification eval config on math data is refused by name."""
    task = TASKS[sections["data"].task]  # an unknown name is refused here, listing the registered ones
    for name, method in sections["eval"].prompting.items():
        if unfit := [scoring for scoring in method.scoring if scoring not in task.scorings]:
            raise TunelabError(f"config key eval.prompting.{name}.scoring: {unfit[0]} needs answer choices, and task "
                               f"{task.name} has none; use scoring: {list(task.scorings)} (e.g. -S eval={task.name}, "
                               "whose methods all generate)")


def configured_templates(sections: dict) -> dict:
    """Every template the config names, by its key: the training prompt, the prompting methods'
    own, and those the prompt search tries."""
    settings = sections["eval"]
    templates = {"prompt": sections["prompt"]}
    templates |= {f"eval.prompting.{name}.template": method.template
                  for name, method in settings.prompting.items() if method.template is not None}
    return templates | {f"eval.prompt_search.templates.{name}": template
                        for name, template in settings.prompt_search.templates.items()}


def check_templates_are_chats(sections: dict) -> None:
    """A generative example is a chat (maybe multi-turn), trained and prompted through the model's
    chat template, and it needs a target to learn."""
    for key, config in configured_templates(sections).items():
        if not config.use_chat_template:
            raise TunelabError(f"config key {key}.use_chat_template: task {sections['data'].task} renders chats "
                               "through the model's chat template; set it to true")
        if "|||" not in config.template:
            raise TunelabError(f"config key {key}.template: template {config.name!r} has no '|||' target; a "
                               "generative task's target is e.g. {{ references[0] }}")


def check_templates_answer_labels(sections: dict) -> None:
    """Every template that scores or trains on answer choices (the training prompt and each
    prompting method's) names one choice per label of data.labels; refused here, before a stage
    trains for minutes and evaluation then finds the mismatch."""
    labels = sections["data"].labels
    for key, config in configured_templates(sections).items():
        choices = PromptTemplate(config).static_choices()
        if choices is not None:  # None: they depend on the row, and are checked as each row is rendered
            hint = ("; write a conf/prompt file whose answer_choices name your labels and pick it with -S prompt=NAME"
                    if key == "prompt" else f"; or set {key}=null to derive it from the training prompt")
            check_choices_fit(choices, labels, f"{key}: template {config.name!r}", hint=hint)
