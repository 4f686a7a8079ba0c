"""tunelab serve read as an attacker and as a careful client would: one token budget that no field
slips past, each request decoded as it asks or refused, ids the server owns, a key, a body limit,
work off the event loop, a client that leaves stops its generation, a bounded shutdown, and a fuzz
table of malformed requests each answered with the right 4xx while the server keeps serving.

One keyed server on loopback serves the module (the tiny model, its weights ×20, a chat template
that renders tools); tests that need a server of their own start and stop it."""

import asyncio
import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from pathlib import Path

import openai
import pytest
from hostile_requests import CHAT, TOOL, hostile_requests
from served import greedy_references, post, serve_settings, write_served_model

from tunelab.serving.engines import Served, Server, transformers_command
from tunelab.serving.guards import API_KEY_VARIABLE

NAME = "tunelab-tiny"
KEY = "sk-test-0123456789"
AUTH = {"authorization": f"Bearer {KEY}"}
QUESTION = "Review 3: a sharp film. Is it positive or negative?"
CONTEXT = 512  # tiny_model's max_position_embeddings
LIMIT = serve_settings().max_body_bytes


@pytest.fixture(scope="module")
def served_model_dir(tmp_path_factory) -> Path:
    return write_served_model(tmp_path_factory.mktemp("served-model"))


def start(folder: Path, log: Path, **changes) -> Server:
    settings = serve_settings(**changes)
    return Server(transformers_command(Served(NAME, folder), settings), f"http://127.0.0.1:{settings.port}/v1", log,
                  env={API_KEY_VARIABLE: KEY})


@pytest.fixture(scope="module")
def server(tmp_path_factory, served_model_dir):
    with start(served_model_dir, tmp_path_factory.mktemp("serve") / "server.log") as live:
        yield live


def client_of(server: Server, timeout: float = 60) -> openai.OpenAI:
    return openai.OpenAI(base_url=server.base_url, api_key=KEY, max_retries=0, timeout=timeout)


@pytest.fixture
def client(server):
    return client_of(server)


def health(server: Server) -> dict:
    with urllib.request.urlopen(server.base_url.removesuffix("/v1") + "/health", timeout=5) as answer:
        return json.loads(answer.read())


def still_serving(server: Server) -> None:
    assert health(server)["status"] == "ok"
    answer = client_of(server).chat.completions.create(model=NAME, messages=[{"role": "user", "content": QUESTION}],
                                                       max_tokens=3)
    assert answer.usage.completion_tokens == 3


FUZZ = hostile_requests(NAME, QUESTION, CONTEXT, LIMIT, KEY)


def chat_body(**fields) -> dict:
    return {"model": NAME, "messages": [{"role": "user", "content": QUESTION}], "max_tokens": 4, **fields}


@pytest.mark.parametrize("route, body, headers, status, fragment", [case[1:] for case in FUZZ],
                         ids=[case[0] for case in FUZZ])
def test_a_hostile_request_gets_its_4xx_in_openais_shape_and_the_server_keeps_serving(
        server, route, body, headers, status, fragment):
    data = body if isinstance(body, bytes) or body is None else json.dumps(body).encode()
    request = urllib.request.Request(server.base_url + route, data=data,
                                     headers={"content-type": "application/json", **AUTH, **headers})
    with pytest.raises(urllib.error.HTTPError) as refused:
        urllib.request.urlopen(request, timeout=60)
    error = json.loads(refused.value.read())["error"]
    assert (refused.value.code, error["code"]) == (status, status)
    assert fragment in error["message"]
    assert "Traceback" not in error["message"] and len(error["message"].splitlines()) == 1
    still_serving(server)


def test_the_fuzz_table_is_thirty_cases_or_more():
    assert len(FUZZ) >= 30 and len({case[0] for case in FUZZ}) == len(FUZZ)


# --- 1. one token budget ---------------------------------------------------------------------------------


def test_max_completion_tokens_supersedes_max_tokens(client):
    answer = client.chat.completions.create(model=NAME, messages=[{"role": "user", "content": QUESTION}],
                                            max_tokens=400, max_completion_tokens=3)
    assert answer.usage.completion_tokens == 3


def test_a_request_naming_no_budget_generates_only_what_the_context_leaves(client):
    long = "film " * 200
    answer = client.chat.completions.create(model=NAME, messages=[{"role": "user", "content": long}])
    assert answer.usage.total_tokens <= CONTEXT
    assert answer.usage.completion_tokens == CONTEXT - answer.usage.prompt_tokens or answer.choices[0].finish_reason == "stop"


def test_tools_are_counted_as_the_template_renders_them(client, served_model_dir):
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(served_model_dir)
    messages = [{"role": "user", "content": QUESTION}]
    rendered = tokenizer.apply_chat_template(messages, tools=[TOOL], add_generation_prompt=True, return_dict=True)
    answer = client.chat.completions.create(model=NAME, messages=messages, tools=[TOOL], max_tokens=2)
    assert answer.usage.prompt_tokens == len(rendered["input_ids"]) > len(
        tokenizer.apply_chat_template(messages, add_generation_prompt=True, return_dict=True)["input_ids"])


# --- 2. each request its own sampling, or a refusal --------------------------------------------------------


def test_a_sampled_request_first_cannot_make_the_greedy_ones_sample(served_model_dir, tmp_path):
    """A fresh server: a request at T=1.5 arrives first (transformers serve would share its sampling with
    every later request); concurrent greedy requests still get the evaluator's greedy answer."""
    questions = [f"Review {i}: a {'sharp' if i % 2 else 'dull'} film." for i in range(6)]
    expected = greedy_references(served_model_dir, questions, 10)
    with start(served_model_dir, tmp_path / "server.log") as live:
        client = client_of(live)
        with pytest.raises(openai.BadRequestError, match="temperature=1.5: this engine decodes every request with "
                                                         "temperature=0.0, top_p=1.0"):
            client.chat.completions.create(model=NAME, messages=[{"role": "user", "content": QUESTION}],
                                           temperature=1.5, max_tokens=10)

        async def ask(question: str, temperature: float | None):
            asynchronous = openai.AsyncOpenAI(base_url=live.base_url, api_key=KEY, max_retries=0, timeout=60)
            try:
                answer = await asynchronous.chat.completions.create(
                    model=NAME, messages=[{"role": "user", "content": question}], max_tokens=10,
                    **({} if temperature is None else {"temperature": temperature}))
                return answer.choices[0].message.content
            except openai.BadRequestError as refused:
                return refused.status_code
            finally:
                await asynchronous.close()

        async def mixed():
            return await asyncio.gather(*[ask(q, t) for q in questions for t in (None, 0.0, 1.5, 0.9)])

        answers = asyncio.run(mixed())
    for index, question in enumerate(questions):
        greedy_default, greedy_zero, hot, warm = answers[4 * index:4 * index + 4]
        assert greedy_default == greedy_zero == expected[question]
        assert hot == warm == 400


# --- 3. ids the server owns -------------------------------------------------------------------------------


def test_requests_sharing_a_client_id_each_get_their_own_answer_and_the_id_back(server, served_model_dir):
    questions = [f"Review {i}: a {'sharp' if i % 2 else 'dull'} film." for i in range(8)]
    expected = greedy_references(served_model_dir, questions, 8)

    async def ask(question: str):
        asynchronous = openai.AsyncOpenAI(base_url=server.base_url, api_key=KEY, max_retries=0, timeout=60)
        try:
            raw = await asynchronous.chat.completions.with_raw_response.create(
                model=NAME, messages=[{"role": "user", "content": question}], max_tokens=8,
                extra_headers={"x-request-id": "same-id"})
            return raw.headers.get("x-request-id"), raw.parse()
        finally:
            await asynchronous.close()

    async def together():
        return await asyncio.gather(*[ask(q) for q in questions * 3])

    answers = asyncio.run(together())
    for question, (echoed, answer) in zip(questions * 3, answers):
        assert echoed == "same-id"
        assert answer.choices[0].message.content == expected[question]
        assert answer.id != "same-id" and answer.id.startswith("chatcmpl-")
    assert len({answer.id for _, answer in answers}) == len(answers)
    still_serving(server)


# --- 4. keys and exposure ---------------------------------------------------------------------------------


def test_models_lists_names_never_paths_and_health_needs_no_key(server, served_model_dir):
    request = urllib.request.Request(server.base_url + "/models", headers=AUTH)
    with urllib.request.urlopen(request, timeout=10) as answer:
        text = answer.read().decode()
    assert [model["id"] for model in json.loads(text)["data"]] == [NAME]
    assert str(served_model_dir) not in text and "/" not in json.dumps(json.loads(text)["data"])
    assert health(server)["status"] == "ok"


def test_a_server_bound_beyond_loopback_refuses_to_start_without_a_key(served_model_dir):
    settings = serve_settings(host="0.0.0.0")
    environment = {name: value for name, value in os.environ.items() if name != API_KEY_VARIABLE}
    result = subprocess.run(transformers_command(Served(NAME, served_model_dir), settings), capture_output=True,
                            text=True, timeout=120, env=environment)
    assert result.returncode == 2
    assert result.stderr.strip().splitlines() == [
        f"error: serve.host=0.0.0.0 is reachable from other machines: set {API_KEY_VARIABLE} (clients send it as "
        "Authorization: Bearer <key>), or bind 127.0.0.1"]


def test_tunelab_serve_beyond_loopback_refuses_to_start_without_a_key(baseline_copy):
    environment = {name: value for name, value in os.environ.items() if name != API_KEY_VARIABLE}
    result = subprocess.run([str(Path(sys.executable).parent / "tunelab"), "serve", "merged", "serve.host=0.0.0.0"],
                            cwd=baseline_copy, capture_output=True, text=True, env=environment, timeout=120)
    assert result.returncode == 2
    assert result.stderr.strip().splitlines()[-1].startswith("error: serve.host=0.0.0.0 is reachable from other machines")


# --- 5. resources -----------------------------------------------------------------------------------------


def send_chunked(server: Server, chunks: list[bytes]) -> int:
    """POST ``chunks`` with chunked transfer encoding; the status the server answered, read even when it
    answered and closed before the last chunk was sent."""
    import http.client

    host, port = server.base_url.removeprefix("http://").split("/")[0].split(":")
    connection = http.client.HTTPConnection(host, int(port), timeout=60)
    try:
        connection.putrequest("POST", "/v1" + CHAT)
        for name, value in {"content-type": "application/json", "transfer-encoding": "chunked", **AUTH}.items():
            connection.putheader(name, value)
        connection.endheaders()
        try:
            for chunk in chunks:
                connection.send(b"%x\r\n%s\r\n" % (len(chunk), chunk))
            connection.send(b"0\r\n\r\n")
        except (BrokenPipeError, ConnectionResetError):
            pass  # refused mid-body: its answer is waiting to be read
        return connection.getresponse().status
    finally:
        connection.close()


def test_a_50_mb_body_is_refused_without_stalling_health(server):
    """Sent chunked (no Content-Length to refuse it by): the server reads to its limit, answers 413, and
    /health answers quickly meanwhile."""
    latencies: list[float] = []
    stop = threading.Event()

    def probe():
        while not stop.is_set():
            began = time.perf_counter()
            health(server)
            latencies.append(time.perf_counter() - began)
            time.sleep(0.05)

    watcher = threading.Thread(target=probe)
    watcher.start()
    try:
        status = send_chunked(server, [b"x" * (1 << 20)] * 50)
    finally:
        stop.set()
        watcher.join()
    assert status == 413
    assert max(latencies) < 1.0
    still_serving(server)


def test_rendering_a_large_request_does_not_stall_health(server):
    """A body just under the limit is tokenised (seconds) in a worker thread: /health answers meanwhile."""
    body = json.dumps(chat_body(messages=[{"role": "user", "content": "film " * (LIMIT // 5 - 100)}])).encode()
    outcome: dict = {}

    def send():
        outcome["answer"] = post(server.base_url + CHAT, body, AUTH, timeout=120)

    sender = threading.Thread(target=send)
    began = time.perf_counter()
    sender.start()
    latencies = []
    while sender.is_alive():
        probe = time.perf_counter()
        health(server)
        latencies.append(time.perf_counter() - probe)
        time.sleep(0.05)
    took = time.perf_counter() - began
    status, answer = outcome["answer"]
    assert status == 400 and "shorten the prompt" in answer["error"]["message"]
    assert took > 0.5 and len(latencies) >= 3  # long enough to have stalled a loop that tokenised
    assert max(latencies) < 0.5


def test_a_client_that_leaves_a_non_streamed_request_stops_its_generation(server):
    """32 long generations take seconds; when their clients leave after half a second, the server's
    queue empties at once, long before the generations would have ended."""
    def ask_all(timeout: float) -> float:
        began = time.perf_counter()
        client = client_of(server, timeout=timeout)

        def ask():
            try:
                client.chat.completions.create(model=NAME, messages=[{"role": "user", "content": QUESTION}],
                                               max_tokens=480)
            except openai.APITimeoutError:
                pass

        threads = [threading.Thread(target=ask) for _ in range(32)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        return time.perf_counter() - began

    whole = ask_all(timeout=120)
    assert ask_all(timeout=0.5) < whole  # they left before their answers came
    left = time.perf_counter()
    while health(server)["requests"] and time.perf_counter() - left < 30:
        time.sleep(0.02)
    emptied = time.perf_counter() - left
    assert health(server)["requests"] == 0
    assert emptied < whole / 3, (emptied, whole)
    still_serving(server)


def test_shutdown_is_bounded_by_serve_shutdown_seconds(served_model_dir, tmp_path):
    """A request whose body never finishes arriving stays in flight; SIGTERM still ends the server
    within its shutdown_seconds (and a little), with exit status 0."""
    with start(served_model_dir, tmp_path / "server.log", shutdown_seconds=1) as live:
        port = int(live.base_url.rsplit(":", 1)[1].split("/")[0])
        with socket.create_connection(("127.0.0.1", port)) as stuck:
            stuck.sendall(b"POST /v1/chat/completions HTTP/1.1\r\nhost: x\r\ncontent-type: application/json\r\n"
                          b"authorization: Bearer " + KEY.encode() + b"\r\ncontent-length: 100\r\n\r\n{\"mo")
            time.sleep(0.5)
            began = time.perf_counter()
            live.process.send_signal(signal.SIGTERM)
            assert live.process.wait(timeout=30) == 0
            assert time.perf_counter() - began < 6


# --- 7. many at once, each with its own settings -----------------------------------------------------------


def test_64_concurrent_mixed_requests_each_get_their_own_settings_and_no_5xx(server):
    prompts = ["Review 1: a dull film.", "Review 2: a sharp film.", QUESTION, "Tell me about films."]
    combos = [(route, prompt, tokens) for route in ("chat", "completion") for prompt in prompts for tokens in (1, 5, 12)]
    client = client_of(server)

    def reference(route: str, prompt: str, tokens: int) -> str:
        if route == "chat":
            answer = client.chat.completions.create(model=NAME, messages=[{"role": "user", "content": prompt}],
                                                    max_tokens=tokens)
            return answer.choices[0].message.content
        return client.completions.create(model=NAME, prompt=prompt, max_tokens=tokens).choices[0].text

    expected = {combo: reference(*combo) for combo in combos}
    asked = [(combos[i % len(combos)], bool(i % 3 == 0)) for i in range(64)]

    async def one(asynchronous, combo, stream: bool):
        route, prompt, tokens = combo
        try:
            if route == "chat":
                answer = await asynchronous.chat.completions.create(
                    model=NAME, messages=[{"role": "user", "content": prompt}], max_tokens=tokens, stream=stream,
                    temperature=0.0)
                if not stream:
                    return answer.choices[0].message.content, answer.usage.completion_tokens
                pieces, used = [], None
                async for chunk in answer:
                    pieces += [chunk.choices[0].delta.content or ""] if chunk.choices else []
                    used = chunk.usage.completion_tokens if chunk.usage else used
                return "".join(pieces), used
            answer = await asynchronous.completions.create(model=NAME, prompt=prompt, max_tokens=tokens, stream=stream)
            if not stream:
                return answer.choices[0].text, answer.usage.completion_tokens
            pieces, used = [], None
            async for chunk in answer:
                pieces += [chunk.choices[0].text or ""] if chunk.choices else []
                used = chunk.usage.completion_tokens if chunk.usage else used
            return "".join(pieces), used
        except openai.APIStatusError as error:
            return error.status_code, None

    async def all_at_once():
        asynchronous = openai.AsyncOpenAI(base_url=server.base_url, api_key=KEY, max_retries=0, timeout=120)
        try:
            return await asyncio.gather(*[one(asynchronous, combo, stream) for combo, stream in asked])
        finally:
            await asynchronous.close()

    answers = asyncio.run(all_at_once())
    assert not [answer for answer in answers if isinstance(answer[0], int)]  # no error at all, 5xx or other
    for (combo, stream), (text, used) in zip(asked, answers):
        # a stream holds back the last token's bytes that are not yet a character; the whole answer shows "\ufffd"
        assert text == (expected[combo].rstrip("\ufffd") if stream else expected[combo]), (combo, stream)
        assert used is not None and used <= combo[2]
    still_serving(server)
