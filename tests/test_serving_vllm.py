"""engine=vllm on this CPU: vLLM's CPU build, from the environment `make serve-env-vllm` makes,
serving a tiny model on loopback to the official openai client (`make test-vllm`; without the
environment these tests skip, saying how to run them).

The tiny model here has one attention head of 64 dimensions: vLLM's CPU attention has kernels for
head sizes like real models' (32 and up), not the 16 of the tiny model the other tests use."""

import asyncio
import json
import os
import urllib.error
import urllib.request
from pathlib import Path

import openai
import pytest
from conftest import REPO_ROOT
from served import serve_settings, write_served_model

from tunelab.paths import Paths
from tunelab.serving.engines import ENGINES, Served, Server, choose
from tunelab.serving.guards import API_KEY_VARIABLE

VLLM_CPU_ENV = Path(os.environ.get("TUNELAB_VLLM_CPU_ENV", REPO_ROOT / ".venv-vllm"))
NAME = "tunelab-merged"
KEY = "sk-vllm-test"
QUESTION = "Review 3: a sharp film. Is it positive or negative?"

pytestmark = [pytest.mark.vllm, pytest.mark.skipif(
    not (VLLM_CPU_ENV / "bin" / "python").is_file(),
    reason=f"vLLM's CPU build is not in {VLLM_CPU_ENV}: `make test-vllm` makes it and runs these")]


@pytest.fixture(scope="module")
def project(tmp_path_factory) -> Paths:
    """A project whose quantize stage made the merged variant: the tiny model, one 64-wide head."""
    paths = Paths(tmp_path_factory.mktemp("project"))
    merged = paths.deploy / "merged"
    write_served_model(merged / "model", num_attention_heads=1, num_key_value_heads=1)
    (merged / "tunelab_deploy.json").write_text(json.dumps({"method": "merged", "loader": "float"}))
    return paths


@pytest.fixture(scope="module")
def server(project, tmp_path_factory):
    settings = serve_settings(variant="merged", vllm_cpu_env=str(VLLM_CPU_ENV))
    engine, served = choose(settings, project)
    assert engine.name == "vllm"  # engine=auto picks it where the CPU build exists
    log = tmp_path_factory.mktemp("vllm") / "server.log"
    with Server(engine.command(served, settings), f"http://127.0.0.1:{settings.port}/v1", log, start_timeout=600,
                env={API_KEY_VARIABLE: KEY}) as live:
        yield live


@pytest.fixture
def client(server):
    return openai.OpenAI(base_url=server.base_url, api_key=KEY, max_retries=0, timeout=120)


def ask(client, temperature: float, content: str = QUESTION, max_tokens: int = 8) -> str:
    answer = client.chat.completions.create(model=NAME, messages=[{"role": "user", "content": content}],
                                            max_tokens=max_tokens, temperature=temperature)
    return answer.choices[0].message.content


def test_the_cpu_build_is_asked_for_its_portable_kernels_and_no_path_of_this_machine(project):
    settings = serve_settings(variant="merged", vllm_cpu_env=str(VLLM_CPU_ENV))
    command = ENGINES["vllm"].command(Served(NAME, project.deploy / "merged" / "model"), settings)
    assert command[:4] == ["env", "-C", str(project.deploy / "merged"), "VLLM_TARGET_DEVICE=cpu"]
    assert command[command.index("--model") + 1] == "model"
    assert "--enable-prefix-caching" in command


def test_models_lists_the_name_and_no_path(server, project):
    request = urllib.request.Request(server.base_url + "/models", headers={"authorization": f"Bearer {KEY}"})
    with urllib.request.urlopen(request, timeout=30) as answer:
        text = answer.read().decode()
    [model] = json.loads(text)["data"]
    assert (model["id"], model["root"]) == (NAME, "model")
    assert str(project.root) not in text


def test_a_request_without_the_key_is_refused(server):
    anonymous = openai.OpenAI(base_url=server.base_url, api_key="wrong", max_retries=0, timeout=60)
    with pytest.raises(openai.AuthenticationError):
        ask(anonymous, 0.0)


def test_each_request_is_sampled_as_it_asks(client):
    """Greedy requests agree with each other whatever runs beside them; T=1.5 requests sample."""
    greedy = ask(client, 0.0)

    async def mixed():
        asynchronous = openai.AsyncOpenAI(base_url=client.base_url, api_key=KEY, max_retries=0, timeout=120)
        try:
            async def one(temperature: float) -> str:
                answer = await asynchronous.chat.completions.create(
                    model=NAME, messages=[{"role": "user", "content": QUESTION}], max_tokens=8, temperature=temperature)
                return answer.choices[0].message.content
            return await asyncio.gather(*[one(t) for t in [1.5, 0.0] * 8])
        finally:
            await asynchronous.close()

    answers = asyncio.run(mixed())
    assert answers[1::2] == [greedy] * 8
    assert any(answer != greedy for answer in answers[0::2])


def test_a_malformed_request_is_a_400_and_the_server_keeps_serving(server, client):
    request = urllib.request.Request(server.base_url + "/chat/completions", data=json.dumps(
        {"model": NAME, "messages": ["hi"], "max_tokens": 4}).encode(),
        headers={"content-type": "application/json", "authorization": f"Bearer {KEY}"})
    with pytest.raises(urllib.error.HTTPError) as refused:
        urllib.request.urlopen(request, timeout=60)
    assert refused.value.code == 400
    assert ask(client, 0.0, max_tokens=3)
