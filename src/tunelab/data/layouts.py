"""Data formats people already have, mapped to one shape by config (field names, not code).

Every generative example becomes a chat: ``messages`` (optional system, then user and assistant
turns alternating, ending with the assistant turn that is scored) and ``references`` (the
acceptable answers to that last turn: the first is the training target; SQuAD has several).

- ``prompt_completion``: ``prompt`` and ``completion`` fields (a list of completions: references);
- ``alpaca``: ``instruction``, optional ``input``, ``output``;
- ``messages``: a list of ``{role, content}`` turns (multi-turn, optional system; OpenAI's
  assistant ``tool_calls`` and ``tool`` turns kept as they are);
- ``sharegpt``: ``conversations``, a list of ``{from, value}`` turns (human, gpt, system).

``data.fields`` maps these names to the columns of the user's file, ``data.roles`` its role
names to system, user and assistant.
"""

from collections.abc import Callable
from dataclasses import dataclass

from tunelab.errors import TunelabError
from tunelab.registry import Registry

ROLES = ("system", "user", "assistant", "tool")
NEXT_ROLES = {"user": ("assistant",), "assistant": ("user",), "tool_call": ("tool",), "tool": ("tool", "assistant")}
"""What may follow each turn: an assistant turn with ``tool_calls`` is answered by tool turns,
which the assistant answers in turn (OpenAI's chat format)."""


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
        calls = isinstance(turn, dict) and isinstance(turn.get("tool_calls"), list) and turn["tool_calls"]
        if not isinstance(turn, dict) or not (isinstance(turn.get(content_key), str) or calls):
            raise TunelabError(f"{where}: turn {number} must be {{{role_key}, {content_key}}} with a text {content_key}")
        role = roles.get(turn.get(role_key), turn.get(role_key))
        if role not in ROLES:
            known = sorted({*roles, *ROLES})
            raise TunelabError(f"{where}: turn {number} has {role_key} {turn.get(role_key)!r}, none of {known}; map it, "
                               f"e.g. -S 'data.roles={{{turn.get(role_key)}: assistant}}'")
        kept = {key: turn[key] for key in ("tool_calls", "tool_call_id", "name") if turn.get(key) is not None}
        renamed.append({"role": role, "content": turn.get(content_key) or "", **kept})
    return renamed


def turn_kind(turn: dict) -> str:
    return "tool_call" if turn["role"] == "assistant" and turn.get("tool_calls") else turn["role"]


def check_turns(messages: list[dict], where: str) -> list[dict]:
    """Optional system first, then user and assistant alternating, ending with an assistant turn."""
    for number, turn in enumerate(messages, 1):
        if not turn["content"].strip() and not turn.get("tool_calls"):
            raise TunelabError(f"{where}: turn {number} ({turn['role']}) is empty")
    body = messages[1:] if messages[0]["role"] == "system" else messages
    allowed = ("user",)
    for number, turn in enumerate(body, 1 + len(messages) - len(body)):
        if turn["role"] not in allowed:
            expected = " or ".join(repr(role) for role in allowed)
            why = ("an assistant turn with tool_calls is answered by tool turns" if allowed == ("tool",) else
                   "roles must alternate user, assistant after an optional system turn")
            raise TunelabError(f"{where}: turn {number} is {turn['role']!r}, expected {expected}: {why}")
        allowed = NEXT_ROLES[turn_kind(turn)]
    if not any(turn["role"] == "assistant" for turn in body):
        raise TunelabError(f"{where}: no assistant turn; a chat row needs one to learn and to score")
    if turn_kind(body[-1]) != "assistant":
        last = "a user turn" if body[-1]["role"] == "user" else "a tool call or result"
        raise TunelabError(f"{where}: the last turn is {last}; end each chat with the assistant's answer")
    return messages


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
