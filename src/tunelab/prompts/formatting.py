"""One prepared example → the row the format stage writes (text, tokens, loss mask).

A classification example is a prompt and its label's answer choice as the completion; a
generative example is a chat (its earlier turns, the rendered prompt, the target) with loss on
every assistant turn.
"""

from pathlib import Path

from tunelab.config.schema import FormatConfig, PromptConfig
from tunelab.errors import TunelabError
from tunelab.prompts.chat import (
    chat_before_answer,
    check_chat_template,
    check_renders_tool_calls,
    model_completion,
    model_prompt,
)
from tunelab.prompts.templates import PromptTemplate, RenderedExample
from tunelab.prompts.tokenization import (
    TokenizedExample,
    check_ends_with_eos,
    tokenize_conversation,
    tokenize_example,
)


def load_tokenizer(model_folder: Path):
    from transformers import AutoTokenizer

    if not (model_folder / "tokenizer_config.json").is_file():
        raise TunelabError(f"{model_folder}: no tokenizer found; run the base stage first")
    return AutoTokenizer.from_pretrained(model_folder)


def template_fields(example: dict, labels: list[str]) -> dict:
    """What a template may use: a classification example's fields plus ``label_index`` and
    ``labels`` (whose names the generic classification template's answer choices are); a generative
    task's example (no labels) as it is."""
    if not labels:
        return example
    if example["label"] not in labels:
        raise TunelabError(f"row {example['id']}: label {example['label']!r} is not in data.labels {labels}")
    return {**example, "label_index": labels.index(example["label"]), "labels": list(labels)}


def with_target(rendered: RenderedExample, template: PromptTemplate) -> RenderedExample:
    if rendered.target is None:
        raise TunelabError(f"prompt {template.name!r}: the template has no '|||' target, so there is nothing to train on")
    return rendered


def format_example(
    example: dict, labels: list[str], template: PromptTemplate, prompt: PromptConfig, settings: FormatConfig, tokenizer
) -> tuple[dict, TokenizedExample]:
    """A classification example: the prompt, and its label's answer choice as the completion."""
    rendered = with_target(template.render(template_fields(example, labels), row=str(example["id"])), template)
    text_prompt = model_prompt(tokenizer, rendered.prompt, prompt.system, prompt.use_chat_template)
    text_completion = model_completion(tokenizer, rendered.target, prompt.use_chat_template)
    tokens = tokenize_example(
        tokenizer, text_prompt, text_completion, settings.max_length, add_special_tokens=not prompt.use_chat_template
    )
    check_ends_with_eos(tokens, tokenizer.eos_token_id, row=str(example["id"]))
    row = {
        "id": example["id"],
        "label": example["label"],
        "target": rendered.target,
        "choices": rendered.choices,
        "prompt": text_prompt,
        "completion": text_completion,
        "input_ids": tokens.input_ids,
        "completion_mask": tokens.completion_mask,
        "prompt_length": tokens.prompt_length,
    }
    return row, tokens


def format_chat_example(example: dict, template: PromptTemplate, prompt: PromptConfig, settings: FormatConfig,
                        tokenizer) -> tuple[dict, TokenizedExample]:
    """A generative example as the chat it is trained on: its earlier turns (``history``), the
    rendered prompt as the last user turn and the rendered target as the answer; loss on every
    assistant turn and its end-of-turn token (tokenize_conversation)."""
    check_chat_template(tokenizer)
    rendered = with_target(template.render(example, row=str(example["id"])), template)
    messages = [*chat_before_answer(rendered.prompt, prompt.system, history=example.get("history", []),
                                    tool_turns=example.get("tool_turns", [])),
                {"role": "assistant", "content": rendered.target}]
    check_renders_tool_calls(tokenizer, messages, row=str(example["id"]))
    tokens = tokenize_conversation(tokenizer, messages, settings.max_length, row=str(example["id"]))
    row = {
        "id": example["id"],
        "references": example["references"],
        "target": rendered.target,
        "messages": messages,
        "input_ids": tokens.input_ids,
        "completion_mask": tokens.completion_mask,
        "prompt_length": tokens.prompt_length,
    }
    return row, tokens
