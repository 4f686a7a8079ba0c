"""How a rendered prompt and target become the exact text the model reads and learns."""

from collections.abc import Sequence

from tunelab.errors import TunelabError

Demonstration = tuple[str, str]
"""A solved example shown before the question: (rendered prompt, target)."""


def chat_before_answer(prompt: str, system: str | None, demonstrations: Sequence[Demonstration] = (),
                       history: Sequence[dict] = (), tool_turns: Sequence[dict] = ()) -> list[dict]:
    """The turns a model reads before it answers: a system message (the chat's own, else the
    template's), few-shot demonstrations as earlier user/assistant turns, the chat's earlier turns
    (a multi-turn example's ``history``), ``prompt`` as the user turn, then any tool calls and
    results that came before the answer (``tool_turns``)."""
    own_system = list(history[:1]) if history and history[0]["role"] == "system" else []
    system_turn = own_system or ([{"role": "system", "content": system}] if system else [])
    messages = list(system_turn)
    for question, answer in demonstrations:
        messages += [{"role": "user", "content": question}, {"role": "assistant", "content": answer}]
    return [*messages, *history[len(own_system):], {"role": "user", "content": prompt}, *tool_turns]


def check_renders_tool_calls(tokenizer, messages: Sequence[dict], row: str) -> None:
    """A chat template that drops tool calls would train the model on answers to calls it never
    saw: refuse it, naming the row, where the rendered chat lacks a call's function name."""
    calls = [call for turn in messages for call in turn.get("tool_calls") or []]
    if not calls:
        return
    text = tokenizer.apply_chat_template(list(messages), tokenize=False)
    for call in calls:
        name = (call.get("function") or {}).get("name") if isinstance(call, dict) else None
        if not name or name not in text:
            raise TunelabError(f"row {row}: the model's chat template does not render tool calls (function {name!r} is "
                               "not in the rendered chat); use a model whose template does, or set "
                               "model.chat_template to a Jinja file that renders tool_calls")


def check_chat_template(tokenizer) -> None:
    if not tokenizer.chat_template:
        raise TunelabError(
            "the base model's tokenizer has no chat template; set prompt.use_chat_template=false"
        )


def model_prompt(tokenizer, prompt: str, system: str | None, use_chat_template: bool,
                 demonstrations: Sequence[Demonstration] = (), history: Sequence[dict] = (),
                 tool_turns: Sequence[dict] = ()) -> str:
    """The prompt as the model sees it: through its own chat template, as a user turn.

    Few-shot demonstrations come first, as earlier user/assistant turns of the same chat (or,
    without a chat template, as solved blocks separated by blank lines), so every prompt of a
    few-shot evaluation starts with the same text, which the scorer computes once.
    """
    if not use_chat_template:
        solved = "".join(f"{question} {answer}\n\n" for question, answer in demonstrations)
        return f"{system}\n\n{solved}{prompt}" if system else f"{solved}{prompt}"
    check_chat_template(tokenizer)
    messages = chat_before_answer(prompt, system, demonstrations, history, tool_turns)
    return tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)


def model_completion(tokenizer, target: str, use_chat_template: bool) -> str:
    """The target plus EOS: a model that never sees EOS in training never learns to stop.

    Without a chat template the target follows the prompt after a space, as in ``Answer: yes``.
    """
    separator = "" if use_chat_template else " "
    return f"{separator}{target}{tokenizer.eos_token}"
