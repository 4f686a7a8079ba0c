"""How a rendered prompt and target become the exact text the model reads and learns."""

from collections.abc import Sequence

from tunelab.errors import TunelabError

Demonstration = tuple[str, str]
"""A solved example shown before the question: (rendered prompt, target)."""


def chat_before_answer(prompt: str, system: str | None, demonstrations: Sequence[Demonstration] = (),
                       history: Sequence[dict] = ()) -> list[dict]:
    """The turns a model reads before it answers: a system message (the chat's own, else the
    template's), few-shot demonstrations as earlier user/assistant turns, the chat's earlier turns
    (a multi-turn example's ``history``), then ``prompt`` as the user turn."""
    own_system = list(history[:1]) if history and history[0]["role"] == "system" else []
    system_turn = own_system or ([{"role": "system", "content": system}] if system else [])
    messages = list(system_turn)
    for question, answer in demonstrations:
        messages += [{"role": "user", "content": question}, {"role": "assistant", "content": answer}]
    return [*messages, *history[len(own_system):], {"role": "user", "content": prompt}]


def check_chat_template(tokenizer) -> None:
    if not tokenizer.chat_template:
        raise TunelabError(
            "the base model's tokenizer has no chat template; set prompt.use_chat_template=false"
        )


def model_prompt(tokenizer, prompt: str, system: str | None, use_chat_template: bool,
                 demonstrations: Sequence[Demonstration] = (), history: Sequence[dict] = ()) -> str:
    """The prompt as the model sees it: through its own chat template, as a user turn.

    Few-shot demonstrations come first, as earlier user/assistant turns of the same chat (or,
    without a chat template, as solved blocks separated by blank lines), so every prompt of a
    few-shot evaluation starts with the same text, which the scorer computes once.
    """
    if not use_chat_template:
        solved = "".join(f"{question} {answer}\n\n" for question, answer in demonstrations)
        return f"{system}\n\n{solved}{prompt}" if system else f"{solved}{prompt}"
    check_chat_template(tokenizer)
    messages = chat_before_answer(prompt, system, demonstrations, history)
    return tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)


def model_completion(tokenizer, target: str, use_chat_template: bool) -> str:
    """The target plus EOS: a model that never sees EOS in training never learns to stop.

    Without a chat template the target follows the prompt after a space, as in ``Answer: yes``.
    """
    separator = "" if use_chat_template else " "
    return f"{separator}{target}{tokenizer.eos_token}"
