"""One prepared example → the row the format stage writes (text, tokens, loss mask)."""

from pathlib import Path

from tunelab.config.schema import FormatConfig, PromptConfig
from tunelab.errors import TunelabError
from tunelab.prompts.chat import model_completion, model_prompt
from tunelab.prompts.templates import PromptTemplate
from tunelab.prompts.tokenization import TokenizedExample, check_ends_with_eos, tokenize_example


def load_tokenizer(model_folder: Path):
    from transformers import AutoTokenizer

    if not (model_folder / "tokenizer_config.json").is_file():
        raise TunelabError(f"{model_folder}: no tokenizer found; run the base stage first")
    return AutoTokenizer.from_pretrained(model_folder)


def template_fields(example: dict, labels: list[str]) -> dict:
    """What a template may use: the example's fields plus ``label_index``."""
    if example["label"] not in labels:
        raise TunelabError(f"row {example['id']}: label {example['label']!r} is not in data.labels {labels}")
    return {**example, "label_index": labels.index(example["label"])}


def format_example(
    example: dict, labels: list[str], template: PromptTemplate, prompt: PromptConfig, settings: FormatConfig, tokenizer
) -> tuple[dict, TokenizedExample]:
    rendered = template.render(template_fields(example, labels), row=str(example["id"]))
    if rendered.target is None:
        raise TunelabError(f"prompt {template.name!r}: the template has no '|||' target, so there is nothing to train on")
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
    }
    return row, tokens
