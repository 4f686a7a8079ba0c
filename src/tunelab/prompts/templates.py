"""promptsource-style templates: Jinja text with ``|||`` between the prompt and the target.

A template sees the example's fields (``text``, ``label``, ...), ``label_index`` (the label's
position in data.labels), ``labels`` (data.labels), its own ``variables`` and ``answer_choices``
(the rendered choices, in label order), so
``{{ answer_choices[label_index] }}`` is the target word of a classification example.
Templates are data from conf/, so they are rendered in Jinja's sandbox: a template can read
the fields it is given and nothing else.
"""

from collections.abc import Mapping
from dataclasses import dataclass

from jinja2 import StrictUndefined, TemplateError, meta
from jinja2.sandbox import SandboxedEnvironment

from tunelab.config.schema import PromptConfig
from tunelab.errors import TunelabError

SEPARATOR = "|||"

_ENVIRONMENT = SandboxedEnvironment(undefined=StrictUndefined, autoescape=False)


@dataclass(frozen=True)
class RenderedExample:
    prompt: str
    target: str | None
    """None when the template has no ``|||`` (a prompt with nothing to learn or score)."""
    choices: list[str]


def check_choices_fit(choices: list[str], labels: list[str], where: str, on_row: str = "", hint: str = "") -> None:
    """Refuse answer choices that do not answer each label of data.labels with one choice (in its
    order): choice scoring and answer parsing would mean nothing. ``where`` names the template."""
    if not choices:
        raise TunelabError(f"{where}: no answer_choices; scoring needs one choice per label in data.labels order, "
                           f"e.g. answer_choices: {' ||| '.join(labels)}")
    if len(choices) != len(labels):
        raise TunelabError(f"{where}: answer_choices gives {len(choices)} choices {choices}{on_row}, but data.labels has "
                           f"{len(labels)} {labels}: each label needs its choice{hint}")


class PromptTemplate:
    """A compiled template; :meth:`render` turns one example into prompt, target and choices."""

    def __init__(self, config: PromptConfig):
        self.name = config.name
        # Split on the template's own '|||' before any data is substituted: a field whose text holds
        # '|||' is text, never a second separator.
        prompt, *target = config.template.split(SEPARATOR)
        if len(target) > 1:
            raise TunelabError(f"prompt {self.name!r}: prompt.template has {len(target)} '|||' separators; use one")
        self._prompt = self._compile(prompt, "template")
        self._target = self._compile(target[0], "template") if target else None
        self._choices = self._compile(config.answer_choices, "answer_choices") if config.answer_choices else None
        self._choices_source = config.answer_choices
        self._variables = dict(config.variables)

    def _compile(self, source: str, key: str):
        try:
            return _ENVIRONMENT.from_string(source)
        except TemplateError as error:
            line = getattr(error, "lineno", None)
            at = f" line {line}" if line else ""
            raise TunelabError(f"prompt {self.name!r}: prompt.{key}{at}: {error.message}") from None

    def _render(self, template, context: Mapping, key: str, row: str) -> str:
        try:
            return template.render(**context)
        except TemplateError as error:
            fields = sorted(context)
            raise TunelabError(f"prompt {self.name!r}: prompt.{key} on row {row}: {error} (available: {fields})") from None

    def static_choices(self) -> list[str] | None:
        """The answer choices when they do not depend on the row (e.g. "negative ||| positive"), so
        they can be checked against data.labels before any stage runs; None otherwise."""
        if self._choices is None:
            return []
        if meta.find_undeclared_variables(_ENVIRONMENT.parse(self._choices_source)):
            return None
        return self.answer_choices({}, row="(none: checked with the config)")

    def answer_choices(self, fields: Mapping, row: str) -> list[str]:
        if self._choices is None:
            return []
        context = {**self._variables, **fields}
        choices = [choice.strip() for choice in self._render(self._choices, context, "answer_choices", row).split(SEPARATOR)]
        if any(not choice for choice in choices):
            raise TunelabError(f"prompt {self.name!r}: prompt.answer_choices renders an empty choice on row {row}")
        return choices

    def render(self, fields: Mapping, row: str) -> RenderedExample:
        """Render one example; ``row`` names it in errors (an id or ``file:line``)."""
        choices = self.answer_choices(fields, row)
        context = {**self._variables, **fields, "answer_choices": choices}
        prompt = self._render(self._prompt, context, "template", row).strip()
        target = self._render(self._target, context, "template", row).strip() if self._target else None
        if not prompt:
            raise TunelabError(f"prompt {self.name!r}: template renders an empty prompt on row {row}")
        if target == "":
            raise TunelabError(f"prompt {self.name!r}: template renders an empty target after '|||' on row {row}")
        return RenderedExample(prompt=prompt, target=target, choices=choices)
