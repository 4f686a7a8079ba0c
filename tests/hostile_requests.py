"""A table of malformed and hostile requests to an OpenAI-compatible server, each with the status and
a fragment of the message tunelab's server answers it with: the serving tests send it to the
transformers engine, and bench/serve_engines.py sends it to every engine and tabulates what each did."""

import json

CHAT, COMPLETION = "/chat/completions", "/completions"
TOOL = {"type": "function", "function": {"name": "lookup", "parameters": {"type": "object"}}}


def without(body: dict, key: str) -> dict:
    return {name: value for name, value in body.items() if name != key}


def nested(name: str, depth: int) -> bytes:
    return json.dumps({"model": name}).encode()[:-1] + b', "messages": ' + b"[" * depth + b"]" * depth + b"}"


def hostile_requests(name: str, question: str, context: int, body_limit: int, key: str) -> list[tuple]:
    """(id, route, body (a dict is sent as JSON), extra headers, status, a fragment of the error message)."""

    def chat_body(**fields) -> dict:
        return {"model": name, "messages": [{"role": "user", "content": question}], "max_tokens": 4, **fields}

    long_prompt = "film " * (context + 100)
    return [
        ("generation_config", CHAT, chat_body(generation_config="{}"), {}, 400, "generation_config: not a field"),
        ("max_tokens_a_string", CHAT, chat_body(max_tokens="16"), {}, 400, "valid integer at max_tokens"),
        ("max_tokens_negative", CHAT, chat_body(max_tokens=-1), {}, 400, "greater than or equal to 1 at max_tokens"),
        ("max_tokens_zero", CHAT, chat_body(max_tokens=0), {}, 400, "greater than or equal to 1 at max_tokens"),
        ("max_tokens_huge", CHAT, chat_body(max_tokens=10**30), {}, 400, "more than this server allows"),
        ("max_tokens_a_float", CHAT, chat_body(max_tokens=4.5), {}, 400, "valid integer at max_tokens"),
        ("max_tokens_a_bool", CHAT, chat_body(max_tokens=True), {}, 400, "valid integer at max_tokens"),
        ("completion_tokens_supersede", CHAT, chat_body(max_tokens=1, max_completion_tokens=10**6), {}, 400,
         "max_tokens 1000000 is more than this server allows"),
        ("past_the_context", CHAT, chat_body(max_tokens=context), {}, 400, f"maximum context length is {context}"),
        ("prompt_past_the_context", CHAT, chat_body(messages=[{"role": "user", "content": long_prompt}]), {}, 400,
         "shorten the prompt"),
        ("tools_past_the_context", CHAT, chat_body(tools=[TOOL] * (context // 10)), {}, 400, "maximum context length"),
        ("messages_of_strings", CHAT, chat_body(messages=["hi"]), {}, 400, "at messages.0"),
        ("messages_empty", CHAT, chat_body(messages=[]), {}, 400, "at least 1 item"),
        ("messages_missing", CHAT, without(chat_body(), "messages"), {}, 400, "Field required at messages"),
        ("messages_an_object", CHAT, chat_body(messages={"role": "user"}), {}, 400, "valid list at messages"),
        ("role_unknown", CHAT, chat_body(messages=[{"role": "wizard", "content": "hi"}]), {}, 400, "messages.0.role"),
        ("content_a_number", CHAT, chat_body(messages=[{"role": "user", "content": 5}]), {}, 400, "messages.0.content"),
        ("content_an_image", CHAT, chat_body(messages=[{"role": "user", "content": [
            {"type": "image_url", "image_url": {"url": "file:///etc/passwd"}}]}]), {}, 400, "messages.0.content"),
        ("tool_arguments_not_json", CHAT, chat_body(messages=[
            {"role": "assistant", "tool_calls": [{"id": "1", "type": "function",
                                                  "function": {"name": "f", "arguments": "{not json"}}]},
            {"role": "user", "content": "hi"}]), {}, 400, "Invalid JSON"),
        ("tool_without_function", CHAT, chat_body(tools=[{"type": "function"}]), {}, 400, "Field required at tools.0.function"),
        ("logit_bias", CHAT, chat_body(logit_bias={"a": 1}), {}, 400, "logit_bias: not a field"),
        ("chat_template_kwargs", CHAT, chat_body(chat_template_kwargs={"add_generation_prompt": False}), {}, 400,
         "chat_template_kwargs: not a field"),
        ("seed", CHAT, chat_body(seed=1), {}, 400, "seed: not a field"),
        ("stop", CHAT, chat_body(stop=["\n"]), {}, 400, "stop: not a field"),
        ("frequency_penalty", CHAT, chat_body(frequency_penalty=1.0), {}, 400, "frequency_penalty: not a field"),
        ("n_five", CHAT, chat_body(n=5), {}, 400, "Input should be 1 at n"),
        ("temperature_negative", CHAT, chat_body(temperature=-0.5), {}, 400, "at temperature"),
        ("temperature_huge", CHAT, chat_body(temperature=1e308), {}, 400, "at temperature"),
        ("temperature_a_string", CHAT, chat_body(temperature="0"), {}, 400, "valid number at temperature"),
        ("temperature_not_the_servers", CHAT, chat_body(temperature=0.7), {}, 400,
         "temperature=0.7: this engine decodes every request with temperature=0.0"),
        ("top_p_zero", CHAT, chat_body(top_p=0), {}, 400, "greater than 0 at top_p"),
        ("stream_a_string", CHAT, chat_body(stream="yes"), {}, 400, "valid boolean at stream"),
        ("another_model", CHAT, chat_body(model="gpt-4"), {}, 404, "this server serves 'tunelab-tiny'"),
        ("not_json", CHAT, b"{'model': 1}", {}, 400, "JSON decode error"),
        ("invalid_utf8", CHAT, b'{"messages": "\xff\xfe"}', {}, 400, "invalid request body"),
        ("a_json_list", CHAT, b"[]", {}, 400, "valid dictionary"),
        ("json_null", CHAT, b"null", {}, 400, "invalid request body"),
        ("nested_100000_deep", CHAT, nested(name, 100_000), {}, 400, ""),
        ("body_declared_over_the_limit", CHAT, b"{}", {"content-length": str(body_limit + 1)}, 413, "serve.max_body_bytes"),
        ("completion_prompt_a_list", COMPLETION, {"model": name, "prompt": ["a", "b"]}, {}, 400, "valid string at prompt"),
        ("completion_max_tokens_a_string", COMPLETION, {"model": name, "prompt": "a", "max_tokens": "16"}, {}, 400,
         "valid integer at max_tokens"),
        ("completion_suffix", COMPLETION, {"model": name, "prompt": "a", "suffix": "b"}, {}, 400, "suffix: not a field"),
        ("completion_echo", COMPLETION, {"model": name, "prompt": "a", "echo": True}, {}, 400, "echo: not a field"),
        ("no_key", CHAT, chat_body(), {"authorization": ""}, 401, "a valid API key is required"),
        ("a_wrong_key", CHAT, chat_body(), {"authorization": "Bearer sk-wrong"}, 401, "a valid API key is required"),
        ("the_key_without_bearer", CHAT, chat_body(), {"authorization": key}, 401, "a valid API key is required"),
        ("models_without_a_key", "/models", None, {"authorization": ""}, 401, "a valid API key is required"),
    ]
