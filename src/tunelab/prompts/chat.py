"""How a rendered prompt and target become the exact text the model reads and learns."""

from collections.abc import Sequence

from tunelab.errors import TunelabError

Demonstration = tuple[str, str]
"""A solved example shown before the question: (rendered prompt, target)."""


def model_prompt(tokenizer, prompt: str, system: str | None, use_chat_template: bool,
                 demonstrations: Sequence[Demonstration] = ()) -> str:
    """The prompt as the model sees it: through its own chat template, as a user turn.

    Few-shot demonstrations come first, as earlier user/assistant turns of the same chat (or,
    without a chat template, as solved blocks separated by blank lines), so every prompt of a
    few-shot evaluation starts with the same text, which the scorer computes once.
    """
    if not use_chat_template:
        solved = "".join(f"{question} {answer}\n\n" for question, answer in demonstrations)
        return f"{system}\n\n{solved}{prompt}" if system else f"{solved}{prompt}"
    if not tokenizer.chat_template:
        raise TunelabError(
            "the base model's tokenizer has no chat template; set prompt.use_chat_template=false"
        )
    messages = [{"role": "system", "content": system}] if system else []
    for question, answer in demonstrations:
        messages += [{"role": "user", "content": question}, {"role": "assistant", "content": answer}]
    messages.append({"role": "user", "content": prompt})
    return tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)


def model_completion(tokenizer, target: str, use_chat_template: bool) -> str:
    """The target plus EOS: a model that never sees EOS in training never learns to stop.

    Without a chat template the target follows the prompt after a space, as in ``Answer: yes``.
    """
    separator = "" if use_chat_template else " "
    return f"{separator}{target}{tokenizer.eos_token}"
