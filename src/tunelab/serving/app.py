"""The transformers engine: `transformers serve`'s own request handlers and continuous batching,
for one model folder, in an app of the routes an OpenAI client uses.

    python -m tunelab.serving.app models/deploy/merged/model --name tunelab-merged --port 8000

transformers serve's handlers answer `/v1/chat/completions` (streaming or not, a client that
leaves mid-stream cancels its generation) and `/v1/completions`. What is written here, because
transformers serve does not do it for a pinned local model:

- ``/v1/models`` lists the Hugging Face hub cache, not a local folder (and fails without a
  cache): here it lists the one served model, under its short name;
- a prompt longer than the model's context is generated from anyway (positions past the
  trained ones: a minute of garbage); here it is a 400 naming both lengths, as vLLM does;
- errors in OpenAI's shape (``{"error": {"message": ...}}``), which the openai client shows: a
  malformed body is a 400 saying where, another model name a 404 naming the served one;
- a generation request past ``--max-concurrency`` in flight is a 503 saying so (``InFlightLimit``).

Uvicorn runs the app: Ctrl-C and SIGTERM stop accepting, finish what is in flight, then the
lifespan frees the model and the batching worker and says so; the exit status is then 0.
"""

import argparse
import json
import os
import sys
import uuid
from contextlib import asynccontextmanager
from pathlib import Path

from tunelab.errors import TunelabError
from tunelab.prompts.special_tokens import DataText
from tunelab.stage import FAILURE_EXIT_CODE, run_stage


def context_error(prompt_tokens: int, max_tokens: int | None, context: int) -> str | None:
    """vLLM's rule: the prompt and the tokens asked for must fit the model's context."""
    wanted = prompt_tokens + (max_tokens or 0)
    if wanted <= context and prompt_tokens < context:
        return None
    return (f"this model's maximum context length is {context} tokens; the prompt has {prompt_tokens}"
            + (f" and max_tokens asks for {max_tokens} more" if max_tokens else "")
            + ": shorten the prompt or lower max_tokens")


ERROR_TYPES = {400: "BadRequestError", 404: "NotFoundError", 422: "BadRequestError", 500: "InternalServerError",
               503: "ServiceUnavailableError"}


def openai_error(status: int, message: str):
    """An error as OpenAI's API (and vLLM) shape it, so the openai client shows the message."""
    from fastapi.responses import JSONResponse

    return JSONResponse({"error": {"message": message, "type": ERROR_TYPES.get(status, "APIError"), "code": status}},
                        status_code=status)


def invalid_request(error) -> str:
    """FastAPI's validation errors (malformed JSON, a body that is not an object) as one line."""
    first = error.errors()[0]
    where = ".".join(str(part) for part in first.get("loc", ()) if part != "body")
    detail = first.get("ctx", {}).get("error", "")
    return f"invalid request body: {first['msg']}" + (f" ({detail})" if detail else "") + (f" at {where}" if where else "")


CPU_KV_CACHE_SHARE = 0.2
"""Of the free memory, what continuous batching's paged KV cache may take on a CPU. Its default takes
most of it (14.6 GB of a 24 GB host for a 1 MB model), and then the OOM killer takes the server;
vLLM's CPU backend reserves 4 GiB by default, about this share here."""


def kv_cache_config():
    import torch
    from transformers import ContinuousBatchingConfig

    return None if torch.cuda.is_available() else ContinuousBatchingConfig(max_memory_percent=CPU_KV_CACHE_SHARE)


GENERATION_ROUTES = ("/v1/chat/completions", "/v1/completions")


class InFlightLimit:
    """ASGI middleware: a generation request past ``limit`` in flight gets an OpenAI-shaped 503.

    Hand-written because uvicorn's ``limit_concurrency`` counts open connections, idle keep-alive
    ones and the refused request's own included, and answers in plain text, which the openai
    client shows as "Service Unavailable". A streamed answer is in flight until its last chunk
    is sent or its client leaves: that is when the inner app returns."""

    def __init__(self, app, limit: int):
        self.app, self.limit, self.in_flight = app, limit, 0

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http" or scope["path"] not in GENERATION_ROUTES:
            return await self.app(scope, receive, send)
        if self.in_flight >= self.limit:
            refusal = openai_error(503, f"the server has {self.in_flight} requests in flight (serve.max_concurrency); "
                                        "retry when one has finished")
            return await refusal(scope, receive, send)
        self.in_flight += 1
        try:
            await self.app(scope, receive, send)
        finally:
            self.in_flight -= 1


def build_app(folder: Path, name: str, max_concurrency: int | None = None):
    """The app serving ``folder`` as ``name`` (the model name clients send; /v1/models lists it),
    at most ``max_concurrency`` generation requests at a time."""
    from fastapi import FastAPI, HTTPException, Request
    from fastapi.exceptions import RequestValidationError
    from fastapi.responses import JSONResponse
    from starlette.exceptions import HTTPException as StarletteHTTPException
    from transformers.cli.serving.chat_completion import ChatCompletionHandler
    from transformers.cli.serving.completion import CompletionHandler
    from transformers.cli.serving.model_manager import ModelManager
    from transformers.cli.serving.utils import GenerationState

    pinned = str(folder)
    manager = ModelManager(device="auto", dtype="auto", continuous_batching=True,
                           force_model=pinned)  # loads it now: a broken folder fails before the port opens
    state = GenerationState(continuous_batching=True, cb_config=kv_cache_config())
    chat = ChatCompletionHandler(model_manager=manager, generation_state=state)
    completion = CompletionHandler(model_manager=manager, generation_state=state)
    model, tokenizer = manager.load_model_and_processor(manager.process_model_name(pinned))  # the one loaded above
    data_text = DataText(tokenizer)  # a control token in a message is text, as in training (prompts.special_tokens)
    context = model.config.max_position_embeddings

    @asynccontextmanager
    async def lifespan(app):
        yield
        state.shutdown()
        manager.shutdown()
        app.state.stopped = True
        print(f"{name}: stopped; requests in flight were finished first", flush=True)

    app = FastAPI(lifespan=lifespan)
    app.state.stopped = False
    if max_concurrency is not None:
        app.add_middleware(InFlightLimit, limit=max_concurrency)
    app.add_exception_handler(StarletteHTTPException, lambda request, error: openai_error(error.status_code, str(error.detail)))
    app.add_exception_handler(RequestValidationError, lambda request, error: openai_error(400, invalid_request(error)))
    app.add_exception_handler(Exception, lambda request, error: openai_error(500, f"{type(error).__name__}: {error}"))

    def pin(body: dict) -> None:
        """The short name (or none) → the pinned folder, which is what transformers' handlers accept."""
        requested = body.get("model")
        if requested not in (None, name, pinned):
            raise HTTPException(status_code=404, detail=f"model {requested!r} is not served here; "
                                                         f"this server serves {name!r} (GET /v1/models)")
        body["model"] = pinned

    def fits(prompt_tokens: int, body: dict) -> None:
        max_tokens = body.get("max_tokens") or body.get("max_completion_tokens")
        if error := context_error(prompt_tokens, max_tokens, context):
            raise HTTPException(status_code=400, detail=error)

    @app.get("/v1/models")
    def models():
        return JSONResponse({"object": "list", "data": [{"id": name, "object": "model", "owned_by": "tunelab",
                                                          "root": pinned, "max_model_len": context}]})

    @app.get("/health")
    def health():
        if not state.is_cb_alive():
            return openai_error(503, "the continuous batching worker died; restart the server")
        return JSONResponse({"status": "ok", "pid": os.getpid()})  # which process answers (tunelab.serving.engines.Server)

    @app.post("/v1/chat/completions")
    async def chat_completions(request: Request, body: dict):
        pin(body)
        if not isinstance(body.get("messages"), list) or not body["messages"]:
            raise HTTPException(status_code=400, detail="messages: required, a list of {role, content} turns")
        body["messages"] = data_text.value(body["messages"])
        # the handler tokenizes the chat again: counting it here is the price of refusing it before generating
        messages = chat.get_processor_inputs_from_messages(body["messages"], manager.get_model_modality(model))
        ids = tokenizer.apply_chat_template(messages, add_generation_prompt=True, tokenize=True, return_dict=True)
        fits(len(ids["input_ids"]), body)
        return await chat.handle_request(body, request.headers.get("x-request-id") or str(uuid.uuid4()))

    @app.post("/v1/completions")
    async def completions(request: Request, body: dict):
        pin(body)
        if not isinstance(body.get("prompt"), str):
            raise HTTPException(status_code=400, detail="prompt: required, a string")
        fits(len(tokenizer(body["prompt"])["input_ids"]), body)
        return await completion.handle_request(body, request.headers.get("x-request-id") or str(uuid.uuid4()))

    return app


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("folder", type=Path)
    parser.add_argument("--name", required=True)
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--max-concurrency", type=int, default=None, help="generation requests in flight; more get a 503")
    args = parser.parse_args(argv)
    if not (args.folder / "config.json").is_file():
        raise TunelabError(f"{args.folder}: not a model folder (no config.json)")
    import uvicorn

    app = build_app(args.folder, args.name, args.max_concurrency)
    print(json.dumps({"serving": args.name, "url": f"http://{args.host}:{args.port}/v1"}), flush=True)
    try:
        uvicorn.run(app, host=args.host, port=args.port, log_level="warning")
    except (KeyboardInterrupt, SystemExit):  # uvicorn re-raises the signal it shut down on
        pass
    sys.exit(0 if app.state.stopped else FAILURE_EXIT_CODE)


if __name__ == "__main__":
    run_stage(main)
