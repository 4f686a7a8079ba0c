"""How a rendered prompt and target become the exact text the model reads and learns."""

from tunelab.errors import TunelabError


def model_prompt(tokenizer, prompt: str, system: str | None, use_chat_template: bool) -> str:
    """The prompt as the model sees it: through its own chat template, as a user turn."""
    if not use_chat_template:
        return prompt
    if not tokenizer.chat_template:
        raise TunelabError(
            "the base model's tokenizer has no chat template; set prompt.use_chat_template=false"
        )
    messages = [{"role": "system", "content": system}] if system else []
    messages.append({"role": "user", "content": prompt})
    return tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)


def model_completion(tokenizer, target: str, use_chat_template: bool) -> str:
    """The target plus EOS: a model that never sees EOS in training never learns to stop.

    Without a chat template the target follows the prompt after a space, as in ``Answer: yes``.
    """
    separator = "" if use_chat_template else " "
    return f"{separator}{target}{tokenizer.eos_token}"
