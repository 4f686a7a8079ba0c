"""Data formats mapped by config, and the one-line refusals of rows that cannot be trained or scored."""

import copy

import pytest

from tunelab.data.layouts import LAYOUTS, read_example
from tunelab.errors import TunelabError
from tunelab.prompts.tokenization import tokenize_conversation

WHERE = "train.jsonl:3"


def test_every_layout_becomes_a_chat_ending_with_the_scored_assistant_turn():
    assert LAYOUTS.names() == ["prompt_completion", "alpaca", "messages", "sharegpt"]
    assert read_example({"q": "2+2?", "a": ["4", "four"]}, "prompt_completion", {"prompt": "q", "completion": "a"}, WHERE) \
        == ([{"role": "user", "content": "2+2?"}, {"role": "assistant", "content": "4"}], ["4", "four"])
    assert read_example({"instruction": "Translate", "input": "chat", "output": "cat"}, "alpaca", {}, WHERE) == \
        ([{"role": "user", "content": "Translate\n\nchat"}, {"role": "assistant", "content": "cat"}], ["cat"])
    assert read_example({"instruction": "Say hi", "output": "hi"}, "alpaca", {}, WHERE)[0][0]["content"] == "Say hi"
    chat = [{"role": "user", "content": "hi"}, {"role": "assistant", "content": "hello"},
            {"role": "user", "content": "bye"}, {"role": "assistant", "content": "goodbye"}]
    messages, references = read_example({"turns": chat, "persona": "Be brief."}, "messages",
                                        {"messages": "turns", "system": "persona"}, WHERE)
    assert messages == [{"role": "system", "content": "Be brief."}, *chat] and references == ["goodbye"]


def test_sharegpt_rows_map_their_role_names_to_the_chat_roles():
    conversation = [{"from": "system", "value": "Be brief."}, {"from": "human", "value": "hi"},
                    {"from": "gpt", "value": "hello"}, {"from": "human", "value": "bye"}, {"from": "gpt", "value": "ciao"}]
    messages, references = read_example({"conversations": conversation}, "sharegpt", {}, WHERE)
    assert [turn["role"] for turn in messages] == ["system", "user", "assistant", "user", "assistant"]
    assert [turn["content"] for turn in messages] == ["Be brief.", "hi", "hello", "bye", "ciao"] and references == ["ciao"]
    own = [{"from": "customer", "value": "refund?"}, {"from": "agent", "value": "yes"}]
    assert read_example({"chat": own}, "sharegpt", {"conversations": "chat"}, WHERE,
                        roles={"customer": "user", "agent": "assistant"})[1] == ["yes"]
    renamed = [{"role": "human", "content": "hi"}, {"role": "bot", "content": "hello"}]
    assert read_example({"messages": renamed}, "messages", {}, WHERE, roles={"human": "user", "bot": "assistant"})[1] \
        == ["hello"]


TOOL_CHAT = [{"role": "user", "content": "Weather in Paris?"},
             {"role": "assistant", "content": None, "tool_calls": [
                 {"type": "function", "function": {"name": "get_weather", "arguments": '{"city": "Paris"}'}}]},
             {"role": "tool", "content": "18C, sunny", "tool_call_id": "call_1"},
             {"role": "assistant", "content": "It is 18C and sunny."}]


def test_openai_tool_calls_and_results_are_kept_as_turns_of_the_chat():
    messages, references = read_example({"messages": TOOL_CHAT}, "messages", {}, WHERE)
    assert [turn["role"] for turn in messages] == ["user", "assistant", "tool", "assistant"]
    assert messages[1]["tool_calls"] == TOOL_CHAT[1]["tool_calls"] and messages[1]["content"] == ""
    assert messages[2]["tool_call_id"] == "call_1" and references == ["It is 18C and sunny."]


@pytest.mark.parametrize(("turns", "message"), [
    ([*TOOL_CHAT[:2], {"role": "user", "content": "and?"}, TOOL_CHAT[3]],
     "train.jsonl:3: turn 3 is 'user', expected 'tool': an assistant turn with tool_calls is answered by tool turns"),
    (TOOL_CHAT[:3], "train.jsonl:3: the last turn is a tool call or result; end each chat with the assistant's answer"),
    ([TOOL_CHAT[0], {"role": "assistant", "content": None}], "train.jsonl:3: turn 2 must be {role, content}"),
])
def test_a_tool_chat_out_of_order_is_one_line(turns, message):
    with pytest.raises(TunelabError) as refused:
        read_example({"messages": turns}, "messages", {}, WHERE)
    assert str(refused.value).startswith(message)


def test_a_sharegpt_turn_with_an_unknown_role_is_one_line_saying_how_to_map_it():
    conversation = [{"from": "human", "value": "hi"}, {"from": "bot", "value": "hello"}]
    with pytest.raises(TunelabError) as refused:
        read_example({"conversations": conversation}, "sharegpt", {}, WHERE)
    assert str(refused.value) == ("train.jsonl:3: turn 2 has from 'bot', none of ['assistant', 'gpt', 'human', "
                                  "'system', 'tool', 'user']; map it, e.g. -S 'data.roles={bot: assistant}'")


@pytest.mark.parametrize(("fields", "layout", "message"), [
    ({"prompt": "x"}, "prompt_completion", "train.jsonl:3: missing field 'completion' (data.fields.completion; "
                                           "fields present: ['prompt'])"),
    ({"prompt": "x", "completion": ""}, "prompt_completion", "train.jsonl:3: completion has an empty reference"),
    ({"instruction": "x", "output": ["ok", " "]}, "alpaca", "train.jsonl:3: output has an empty reference"),
    ({"messages": [{"role": "user", "content": "a"}, {"role": "user", "content": "b"}]}, "messages",
     "train.jsonl:3: turn 2 is 'user', expected 'assistant'"),
    ({"messages": [{"role": "system", "content": "s"}, {"role": "assistant", "content": "b"}]}, "messages",
     "train.jsonl:3: turn 2 is 'assistant', expected 'user'"),
    ({"messages": [{"role": "user", "content": "a"}]}, "messages", "train.jsonl:3: no assistant turn"),
    ({"messages": [{"role": "user", "content": "a"}, {"role": "assistant", "content": "b"},
                   {"role": "user", "content": "c"}]}, "messages", "train.jsonl:3: the last turn is a user turn"),
    ({"messages": [{"role": "bot", "content": "a"}]}, "messages", "train.jsonl:3: turn 1 has role 'bot', none of"),
    ({"messages": [{"role": "user"}]}, "messages", "train.jsonl:3: turn 1 must be {role, content}"),
    ({"messages": [{"role": "user", "content": "a"}, {"role": "assistant", "content": " "}]}, "messages",
     "train.jsonl:3: turn 2 (assistant) is empty"),
    ({"messages": "hi"}, "messages", "train.jsonl:3: the chat must be a non-empty list"),
])
def test_a_row_that_cannot_be_trained_or_scored_is_one_line_naming_it(fields, layout, message):
    with pytest.raises(TunelabError) as refused:
        read_example(fields, layout, {}, WHERE)
    assert str(refused.value).startswith(message)


def test_an_unknown_layout_names_the_known_ones():
    with pytest.raises(TunelabError, match=r"config key data.layout: unknown value 'openai'; expected one of"):
        read_example({}, "openai", {}, WHERE)


def loss_spans(tokenizer, example) -> list[str]:
    """The text of each run of consecutive loss tokens."""
    spans, current = [], []
    for token, carries_loss in zip(example.input_ids, example.completion_mask):
        if carries_loss:
            current.append(token)
        elif current:
            spans, current = spans + [tokenizer.decode(current)], []
    return spans + ([tokenizer.decode(current)] if current else [])


def test_the_multi_turn_loss_mask_is_every_assistant_turn_and_its_end_of_turn_token(tiny_tokenizer):
    chat = [{"role": "system", "content": "You are a helpful assistant."},
            {"role": "user", "content": "Review: a dull film"}, {"role": "assistant", "content": "negative"},
            {"role": "user", "content": "Review: a moving film"}, {"role": "assistant", "content": "positive, surely"}]
    example = tokenize_conversation(tiny_tokenizer, chat, max_length=512, row="7")
    assert loss_spans(tiny_tokenizer, example) == ["negative<|im_end|>", "positive, surely<|im_end|>"]
    whole = tiny_tokenizer.apply_chat_template(chat, tokenize=False)
    assert tiny_tokenizer.decode(example.input_ids) == whole  # nothing added, nothing lost
    before_first = tiny_tokenizer.apply_chat_template(chat[:2], tokenize=False, add_generation_prompt=True)
    assert tiny_tokenizer.decode(example.input_ids[:example.prompt_length]) == before_first
    short = tokenize_conversation(tiny_tokenizer, chat, max_length=20, row="7")
    assert len(short.input_ids) == 20 and short.truncated


def test_a_chat_without_an_assistant_turn_is_refused_by_the_tokenizer_too(tiny_tokenizer):
    with pytest.raises(TunelabError, match="row 7: no assistant turn"):
        tokenize_conversation(tiny_tokenizer, [{"role": "user", "content": "hi"}], max_length=64, row="7")


def test_a_template_that_renders_a_turn_otherwise_once_it_is_answered_is_refused(tiny_tokenizer):
    """Its generation prompt says "assistant\n", its answered turns "assistant: ": no span to find."""
    tokenizer = copy.deepcopy(tiny_tokenizer)
    tokenizer.chat_template = tokenizer.chat_template.replace(
        "'<|im_start|>' + message['role'] + '\n'", "'<|im_start|>' + message['role'] + ': '")
    assert tokenizer.chat_template != tiny_tokenizer.chat_template
    chat = [{"role": "user", "content": "hi"}, {"role": "assistant", "content": "hello"}]
    with pytest.raises(TunelabError, match="row 7: the chat template renders turn 2 differently"):
        tokenize_conversation(tokenizer, chat, max_length=64, row="7")
