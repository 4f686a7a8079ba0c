"""What the serving tests share: a free loopback port, conf/serve with changes, the served tiny model,
and a raw POST that reads an error's body as well as an answer's."""

import functools
import json
import socket
import urllib.error
import urllib.request
from pathlib import Path

from configs import conf_section
from tiny_model import CHATML_TEMPLATE

TOOLS_TEMPLATE = "{% if tools %}<|im_start|>system\n{{ tools | tojson }}<|im_end|>\n{% endif %}" + CHATML_TEMPLATE
"""ChatML that renders the request's tools, as SmolLM2's and most chat templates do."""


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


NO_VLLM_CPU_ENV = "no-vllm-cpu-env"
"""serve.vllm_cpu_env for the transformers engine's tests: where .venv-vllm exists, engine=auto would pick vLLM."""

TEST_KV_CACHE_SHARE = 0.02
"""The tiny model's servers, several at once beside the suite's other work, each take ~0.4 GB, not ~4 GB."""


def serve_settings(**changes):
    return conf_section("serve", **{"port": free_port(), "vllm_cpu_env": NO_VLLM_CPU_ENV,
                                    "kv_cache_share": TEST_KV_CACHE_SHARE, **changes})


def write_served_model(folder: Path, **config_changes) -> Path:
    """The tiny model with its weights ×20: the random model's greedy answer is a run of newlines,
    this one's a varied string, so two greedy answers that agree say something."""
    import torch
    from tiny_model import build_model, build_tokenizer

    tokenizer = build_tokenizer()
    tokenizer.chat_template = TOOLS_TEMPLATE
    model = build_model(tokenizer, **config_changes)
    with torch.no_grad():
        for name, weight in model.named_parameters():
            if "norm" not in name:
                weight.mul_(20)
    model.save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return folder


@functools.cache
def evaluator_model(folder: Path):
    """The served folder as the evaluator loads it, once per folder for the whole session."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    return AutoModelForCausalLM.from_pretrained(folder).eval(), AutoTokenizer.from_pretrained(folder)


def greedy_references(folder: Path, questions: list[str], max_new_tokens: int) -> dict[str, str]:
    """The evaluator's greedy answer to each question as a user turn: its prompt (prompts.chat) and its
    generation loop, one row at a time as the server decodes it (no padding beside it)."""
    from tunelab.evaluation.generation import generate
    from tunelab.prompts.chat import model_prompt

    model, tokenizer = evaluator_model(folder)
    references = {}
    for question in questions:
        ids = tokenizer(model_prompt(tokenizer, question, None, True), add_special_tokens=False)["input_ids"]
        [[references[question]]] = generate(model, tokenizer, [ids], max_new_tokens=max_new_tokens)
    return references


def post(url: str, body: bytes, headers: dict | None = None, timeout: float = 60) -> tuple[int, dict]:
    request = urllib.request.Request(url, data=body, headers={"content-type": "application/json", **(headers or {})})
    try:
        with urllib.request.urlopen(request, timeout=timeout) as answer:
            return answer.status, json.loads(answer.read())
    except urllib.error.HTTPError as error:
        return error.code, json.loads(error.read())
