"""Data formats people already have, mapped to one shape by config (field names, not code).

Every generative example becomes a chat: ``messages`` (optional system, then user and assistant
turns alternating, ending with the assistant turn that is scored) and ``references`` (the
acceptable answers to that last turn: the first is the training target; SQuAD has several).

- ``prompt_completion``: ``prompt`` and ``completion`` fields (a list of completions: references);
- ``alpaca``: ``instruction``, optional ``input``, ``output``;
- ``messages``: a list of ``{role, content}`` turns (multi-turn, optional system);
- ``sharegpt``: ``conversations``, a list of ``{from, value}`` turns (human, gpt, system).

``data.fields`` maps these names to the columns of the user's file, ``data.roles`` its role
names to system, user and assistant.
"""

from collections.abc import Callable
from dataclasses import dataclass

from tunelab.errors import TunelabError
from tunelab.registry import Registry

ROLES = ("system", "user", "assistant")


@dataclass(frozen=True)
class Layout:
    name: str
    fields: tuple[str, ...]
    """The names ``data.fields`` may map to columns; ``optional`` ones may be absent from a row."""
    optional: tuple[str, ...]
    read: Callable[[dict, str, dict], tuple[list[dict], list[str]]]
    """(the row's values by layout name, where, role names → ROLES) → (messages, references)."""


LAYOUTS: Registry[Layout] = Registry("data.layout")


def text_value(values: dict, name: str, where: str) -> str:
    value = values[name]
    if not isinstance(value, str) or not value.strip():
        raise TunelabError(f"{where}: {name} is empty; give every row a non-empty text")
    return value


def references_of(value, name: str, where: str) -> list[str]:
    answers = value if isinstance(value, list) else [value]
    if not answers or any(not isinstance(a, str) or not a.strip() for a in answers):
        raise TunelabError(f"{where}: {name} has an empty reference; every answer needs text")
    return answers


def read_prompt_completion(values: dict, where: str, roles: dict) -> tuple[list[dict], list[str]]:
    references = references_of(values["completion"], "completion", where)
    return [{"role": "user", "content": text_value(values, "prompt", where)},
            {"role": "assistant", "content": references[0]}], references


def read_alpaca(values: dict, where: str, roles: dict) -> tuple[list[dict], list[str]]:
    instruction = text_value(values, "instruction", where)
    extra = values.get("input")
    prompt = f"{instruction}\n\n{extra}" if isinstance(extra, str) and extra.strip() else instruction
    references = references_of(values["output"], "output", where)
    return [{"role": "user", "content": prompt}, {"role": "assistant", "content": references[0]}], references


def renamed_turns(turns, where: str, roles: dict, role_key: str = "role", content_key: str = "content") -> list[dict]:
    """``{role, content}`` turns from a row's own turn shape and role names (``roles``: theirs → ROLES)."""
    if not isinstance(turns, list) or not turns:
        raise TunelabError(f"{where}: the chat must be a non-empty list of {{{role_key}, {content_key}}} turns")
    renamed = []
    for number, turn in enumerate(turns, 1):
        if not isinstance(turn, dict) or not isinstance(turn.get(content_key), str):
            raise TunelabError(f"{where}: turn {number} must be {{{role_key}, {content_key}}} with a text {content_key}")
        role = roles.get(turn.get(role_key), turn.get(role_key))
        if role not in ROLES:
            known = sorted({*roles, *ROLES})
            raise TunelabError(f"{where}: turn {number} has {role_key} {turn.get(role_key)!r}, none of {known}; map it, "
                               f"e.g. -S 'data.roles={{{turn.get(role_key)}: assistant}}'")
        renamed.append({"role": role, "content": turn[content_key]})
    return renamed


def check_turns(messages: list[dict], where: str) -> list[dict]:
    """Optional system first, then user and assistant alternating, ending with an assistant turn."""
    for number, turn in enumerate(messages, 1):
        if not turn["content"].strip():
            raise TunelabError(f"{where}: turn {number} ({turn['role']}) is empty")
    body = messages[1:] if messages[0]["role"] == "system" else messages
    for number, turn in enumerate(body):
        expected = "user" if number % 2 == 0 else "assistant"
        if turn["role"] != expected:
            position = number + 1 + (len(messages) - len(body))
            raise TunelabError(f"{where}: turn {position} is {turn['role']!r}, expected {expected!r}: roles must "
                               "alternate user, assistant after an optional system turn")
    if not any(turn["role"] == "assistant" for turn in body):
        raise TunelabError(f"{where}: no assistant turn; a chat row needs one to learn and to score")
    if body[-1]["role"] != "assistant":
        raise TunelabError(f"{where}: the last turn is a user turn; end each chat with the assistant's answer")
    return [{"role": turn["role"], "content": turn["content"]} for turn in messages]


def read_messages(values: dict, where: str, roles: dict) -> tuple[list[dict], list[str]]:
    return with_system(check_turns(renamed_turns(values["messages"], where, roles), where), values)


def read_sharegpt(values: dict, where: str, roles: dict) -> tuple[list[dict], list[str]]:
    turns = renamed_turns(values["conversations"], where, {**SHAREGPT_ROLES, **roles}, "from", "value")
    return with_system(check_turns(turns, where), values)


SHAREGPT_ROLES = {"human": "user", "gpt": "assistant", "system": "system"}
"""ShareGPT's role names as LLaMA-Factory and axolotl read them; data.roles adds or overrides."""


def with_system(messages: list[dict], values: dict) -> tuple[list[dict], list[str]]:
    """The chat with the row's own system field first (where it has none), and its last answer as the reference."""
    system = values.get("system")
    if isinstance(system, str) and system.strip() and messages[0]["role"] != "system":
        messages = [{"role": "system", "content": system}, *messages]
    return messages, [messages[-1]["content"]]


LAYOUTS.register(Layout("prompt_completion", ("prompt", "completion"), (), read_prompt_completion))
LAYOUTS.register(Layout("alpaca", ("instruction", "input", "output"), ("input",), read_alpaca))
LAYOUTS.register(Layout("messages", ("messages", "system"), ("system",), read_messages))
LAYOUTS.register(Layout("sharegpt", ("conversations", "system"), ("system",), read_sharegpt))


def read_example(fields: dict, layout_name: str, mapping: dict[str, str], where: str,
                 roles: dict[str, str] | None = None) -> tuple[list[dict], list[str]]:
    """One raw row (its columns) → (messages, references), through ``mapping`` (layout name → column)."""
    layout = LAYOUTS[layout_name]
    values = {}
    for name in layout.fields:
        column = mapping.get(name, name)
        if column in fields and fields[column] is not None:
            values[name] = fields[column]
        elif name not in layout.optional:
            raise TunelabError(f"{where}: missing field {column!r} (data.fields.{name}; fields present: {sorted(fields)})")
    return layout.read(values, where, roles or {})
