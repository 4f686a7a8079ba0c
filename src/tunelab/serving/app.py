"""The transformers engine: `transformers serve`'s own request handlers and continuous batching,
for one model folder, in an app of the routes an OpenAI client uses.

    python -m tunelab.serving.app models/deploy/merged/model --name tunelab-merged --port 8000 ...

transformers serve's handlers answer `/v1/chat/completions` and `/v1/completions`, streamed or not.
What is written here, because transformers serve does not do it for a pinned model a stranger may ask:

- a request is validated by type (serving.requests): a wrong type, an out-of-range number, an
  unknown field is a 400 naming it, in OpenAI's error shape, never a 500 or silently ignored;
- one token budget: the prompt is counted as it is rendered (tools included), the budget is
  max_completion_tokens, else max_tokens, else serve.max_completion_tokens, capped by the context;
- one sampling setting for every request (continuous batching shares it), the server's, set before
  the first request: a request asking for another is a 400 saying what this engine does;
- request ids are the server's own; a client's x-request-id is only echoed back;
- rendering and tokenising run in a worker thread; a client that leaves stops its generation;
- a key (serving.guards), a body limit, a limit on requests in flight, a bounded shutdown;
- ``/v1/models`` lists the one served model under its short name (never a path).

Uvicorn runs the app: Ctrl-C and SIGTERM stop accepting and give requests in flight
``--shutdown-seconds`` to finish, then the lifespan frees the model and the batching worker and says
so; the exit status is then 0.
"""


import argparse
import asyncio
import copy
import json
import os
import sys
import uuid
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Optional

from tunelab.errors import TunelabError
from tunelab.prompts.special_tokens import DataText
from tunelab.serving.guards import (
    API_KEY_VARIABLE,
    BearerKey,
    BodyLimit,
    InFlightLimit,
    exposure_error,
    http_error,
    invalid_request,
    openai_error,
)
from tunelab.serving.requests import ChatRequest, CompletionRequest, Generation, sampling_error, token_budget
from tunelab.stage import FAILURE_EXIT_CODE, run_stage

DISCONNECT_POLL_SECONDS = 0.25
"""How often a non-streamed request looks for its client: a client gone this long stops its generation."""


@dataclass(frozen=True)
class Policy:
    """What every request is held to (conf/serve)."""

    temperature: float
    top_p: float
    max_completion_tokens: int
    max_body_bytes: int
    kv_cache_share: float
    max_concurrency: Optional[int] = None
    api_key: Optional[str] = None


def kv_cache_config(share: float):
    """On a CPU, continuous batching's paged KV cache takes ``share`` of the free memory (serve.kv_cache_share):
    its default takes most of it (14.6 GB of a 24 GB host for a 1 MB model), and then the OOM killer
    takes the server."""
    import torch
    from transformers import ContinuousBatchingConfig

    return None if torch.cuda.is_available() else ContinuousBatchingConfig(max_memory_percent=share)


def served_sampling(model, policy: Policy):
    """The one generation config continuous batching samples every request with."""
    config = copy.deepcopy(model.generation_config)
    config.do_sample = policy.temperature > 0
    config.temperature, config.top_p = (policy.temperature, policy.top_p) if config.do_sample else (None, None)
    config.use_cache = False  # continuous batching keeps its own paged cache
    return config


@dataclass(frozen=True)
class Loaded:
    """The one model served, and the continuous batching manager it runs in."""

    model_id: str
    model: object
    processor: object
    batching: object

    def cancel(self, request_id: str) -> None:
        # transformers serve keeps its batching manager private; cancelling a request is that manager's public method
        self.batching._cb.cancel_request(request_id)

    def queued(self) -> int:
        try:
            scheduler = self.batching.scheduler
        except RuntimeError:  # the batching thread makes its scheduler as it starts: nothing queued before
            return 0
        return len(scheduler.active_requests) + len(scheduler.waiting_requests)


def handlers(loaded: Loaded, manager, state):
    """transformers serve's two handlers, each rendering and tokenising a request once, in a worker
    thread (their own handle_request does it on the event loop, where a large body stalls every other
    request, and counts nothing), then generating from exactly those tokens."""
    from transformers.cli.serving.chat_completion import ChatCompletionHandler
    from transformers.cli.serving.completion import CompletionHandler
    from transformers.cli.serving.utils import Modality

    class Chat(ChatCompletionHandler):
        def tokenize(self, payload: dict) -> dict:
            messages = self.get_processor_inputs_from_messages(payload["messages"], Modality.LLM)
            return loaded.processor.apply_chat_template(messages, add_generation_prompt=True, tools=payload.get("tools"),
                                                        tokenize=True, return_dict=True)

        async def respond(self, request_id: str, inputs: dict, generation, payload: dict):
            arguments = (request_id, loaded.model, loaded.processor, loaded.model_id, inputs, generation)
            if payload.get("stream"):
                return self._streaming(*arguments, gen_manager=loaded.batching, tools=payload.get("tools"))
            return await self._non_streaming(*arguments, gen_manager=loaded.batching, tools=payload.get("tools"))

    class Completion(CompletionHandler):
        def tokenize(self, payload: dict) -> dict:
            return loaded.processor(payload["prompt"])

        async def respond(self, request_id: str, inputs: dict, generation, payload: dict):
            arguments = (request_id, loaded.model, loaded.processor, loaded.model_id, inputs, generation, loaded.batching)
            if payload.get("stream"):
                return self._streaming(*arguments, None)
            return await self._non_streaming(*arguments, None)

    return Chat(model_manager=manager, generation_state=state), Completion(model_manager=manager, generation_state=state)


async def unless_disconnected(request, work, cancel):
    """The response of ``work``, or, when the client leaves first, its generation cancelled."""
    from fastapi.responses import Response

    task = asyncio.ensure_future(work)
    while True:
        done, _ = await asyncio.wait({task}, timeout=DISCONNECT_POLL_SECONDS)
        if done:
            return task.result()
        if await request.is_disconnected():
            cancel()
            task.cancel()
            return Response(status_code=499)  # nginx's "client closed request": nobody reads it


def build_app(folder: Path, name: str, policy: Policy):
    """The app serving ``folder`` as ``name`` (the model name clients send; /v1/models lists it)."""
    from fastapi import FastAPI, HTTPException, Request
    from fastapi.exceptions import RequestValidationError
    from fastapi.responses import JSONResponse
    from starlette.exceptions import HTTPException as StarletteHTTPException
    from transformers.cli.serving.model_manager import ModelManager
    from transformers.cli.serving.utils import GenerationState

    pinned = str(folder)
    manager = ModelManager(device="auto", dtype="auto", continuous_batching=True,
                           force_model=pinned)  # loads it now: a broken folder fails before the port opens
    state = GenerationState(continuous_batching=True, cb_config=kv_cache_config(policy.kv_cache_share))
    model_id = manager.process_model_name(pinned)
    model, processor = manager.load_model_and_processor(model_id)  # the one loaded above
    batching = state.get_manager(model_id, use_cb=True)
    batching.init_cb(model, served_sampling(model, policy))  # the first request's sampling would otherwise be everyone's
    loaded = Loaded(model_id, model, processor, batching)
    chat, completion = handlers(loaded, manager, state)
    data_text = DataText(processor)  # a control token in a message is text, as in training (prompts.special_tokens)
    context = model.config.max_position_embeddings

    @asynccontextmanager
    async def lifespan(app):
        yield
        state.shutdown()
        manager.shutdown()
        app.state.stopped = True
        print(f"{name}: stopped", flush=True)

    app = FastAPI(lifespan=lifespan)
    app.state.stopped = False
    if policy.max_concurrency is not None:
        app.add_middleware(InFlightLimit, limit=policy.max_concurrency)
    app.add_middleware(BodyLimit, limit=policy.max_body_bytes)
    if policy.api_key:
        app.add_middleware(BearerKey, key=policy.api_key)
    app.add_exception_handler(StarletteHTTPException, http_error)
    app.add_exception_handler(RequestValidationError, lambda request, error: openai_error(400, invalid_request(error)))
    app.add_exception_handler(Exception, lambda request, error: openai_error(500, f"{type(error).__name__}: {error}"))

    async def generate(request: Request, handler, asked: Generation, payload: dict, prefix: str):
        if asked.model not in (None, name):
            raise HTTPException(status_code=404, detail=f"model {asked.model!r} is not served here; "
                                                         f"this server serves {name!r} (GET /v1/models)")
        if error := sampling_error(asked, policy.temperature, policy.top_p):
            raise HTTPException(status_code=400, detail=error)
        payload = data_text.value(payload)  # a control token in a message is text
        inputs = await asyncio.to_thread(handler.tokenize, payload)
        try:
            payload["max_tokens"] = token_budget(asked.budget(), len(inputs["input_ids"]), context,
                                                 policy.max_completion_tokens)
        except ValueError as error:
            raise HTTPException(status_code=400, detail=str(error)) from None
        payload.pop("max_completion_tokens", None)  # the budget above is the one the handler reads
        generation = handler._build_generation_config(payload, model.generation_config, use_cb=True)
        request_id = f"{prefix}-{uuid.uuid4().hex}"  # the server's own: a client's id is echoed, never trusted
        work = handler.respond(request_id, inputs, generation, payload)
        if payload.get("stream"):
            response = await work  # a stream cancels its generation when its client leaves
        else:
            response = await unless_disconnected(request, work, lambda: loaded.cancel(request_id))
        if client_id := request.headers.get("x-request-id"):
            response.headers["x-request-id"] = client_id
        return response

    @app.get("/v1/models")
    def models():
        return JSONResponse({"object": "list", "data": [{"id": name, "object": "model", "owned_by": "tunelab",
                                                          "max_model_len": context}]})

    @app.get("/health")
    def health():
        if not state.is_cb_alive():
            return openai_error(503, "the continuous batching worker died; restart the server")
        # the pid says which process answers (tunelab.serving.engines.Server); requests: queued or generating
        return JSONResponse({"status": "ok", "pid": os.getpid(), "requests": loaded.queued()})

    @app.post("/v1/chat/completions")
    async def chat_completions(request: Request, body: ChatRequest):
        return await generate(request, chat, body, body.model_dump(exclude_none=True), "chatcmpl")

    @app.post("/v1/completions")
    async def completions(request: Request, body: CompletionRequest):
        return await generate(request, completion, body, body.model_dump(exclude_none=True), "cmpl")

    return app


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("folder", type=Path)
    parser.add_argument("--name", required=True)
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--max-concurrency", type=int, default=None, help="generation requests in flight; more get a 503")
    parser.add_argument("--temperature", type=float, required=True, help="every request's sampling temperature")
    parser.add_argument("--top-p", type=float, required=True)
    parser.add_argument("--max-completion-tokens", type=int, required=True, help="the most one request may generate")
    parser.add_argument("--max-body-bytes", type=int, required=True)
    parser.add_argument("--kv-cache-share", type=float, required=True, help="of the free memory, on a CPU")
    parser.add_argument("--shutdown-seconds", type=float, required=True,
                        help="how long requests in flight may finish after Ctrl-C or SIGTERM")
    args = parser.parse_args(argv)
    if not (args.folder / "config.json").is_file():
        raise TunelabError(f"{args.folder}: not a model folder (no config.json)")
    api_key = os.environ.get(API_KEY_VARIABLE) or None
    if error := exposure_error(args.host, api_key):
        raise TunelabError(error)
    import uvicorn

    policy = Policy(args.temperature, args.top_p, args.max_completion_tokens, args.max_body_bytes,
                    args.kv_cache_share, args.max_concurrency, api_key)
    app = build_app(args.folder, args.name, policy)
    print(json.dumps({"serving": args.name, "url": f"http://{args.host}:{args.port}/v1"}), flush=True)
    try:
        uvicorn.run(app, host=args.host, port=args.port, log_level="warning",
                    timeout_graceful_shutdown=args.shutdown_seconds)
    except (KeyboardInterrupt, SystemExit):  # uvicorn re-raises the signal it shut down on
        pass
    sys.exit(0 if app.state.stopped else FAILURE_EXIT_CODE)



if __name__ == "__main__":
    run_stage(main)
