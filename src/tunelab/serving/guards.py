"""What stands between a client and the model: OpenAI-shaped errors and three ASGI middlewares, each
hand-written because neither uvicorn nor Starlette has it in the shape an OpenAI client expects
(uvicorn's ``limit_concurrency`` counts idle keep-alive connections and answers in plain text;
neither has a request body limit or a bearer key).

Outermost first: ``BearerKey`` (401 before a byte of the body is read), ``BodyLimit`` (413),
``InFlightLimit`` (503). ``/health`` passes the key and the limits: a liveness probe holds no key.
"""

import hmac
from typing import Optional

API_KEY_VARIABLE = "TUNELAB_API_KEY"
"""The server's key, from the environment: a key in conf would be written into params.yaml and committed."""

ERROR_TYPES = {400: "BadRequestError", 401: "AuthenticationError", 404: "NotFoundError",
               413: "RequestTooLargeError", 422: "BadRequestError", 500: "InternalServerError",
               503: "ServiceUnavailableError"}

GENERATION_ROUTES = ("/v1/chat/completions", "/v1/completions")


def openai_error(status: int, message: str):
    """An error as OpenAI's API (and vLLM) shape it, so the openai client shows the message."""
    from fastapi.responses import JSONResponse

    return JSONResponse({"error": {"message": message, "type": ERROR_TYPES.get(status, "APIError"), "code": status}},
                        status_code=status)


def invalid_request(error) -> str:
    """A validation error (malformed JSON, a wrong type, an unknown field) as one line naming the field."""
    first = error.errors()[0]
    where = ".".join(str(part) for part in first.get("loc", ()) if part != "body")
    if first.get("type") == "extra_forbidden":
        return f"invalid request body: {where}: not a field this server supports; leave it out"
    detail = first.get("ctx", {}).get("error", "")
    return f"invalid request body: {first['msg']}" + (f" ({detail})" if detail else "") + (f" at {where}" if where else "")


def http_error(request, error):
    """An HTTP error in OpenAI's shape; FastAPI's "error parsing the body" says what the error was
    (bytes that are not UTF-8, JSON nested past Python's recursion limit)."""
    cause = error.__cause__
    if error.status_code == 400 and cause is not None:
        return openai_error(400, f"invalid request body: {type(cause).__name__}: {cause}")
    return openai_error(error.status_code, str(error.detail))


class InFlightLimit:
    """A generation request past ``limit`` in flight gets a 503. A streamed answer is in flight until
    its last chunk is sent or its client leaves: that is when the inner app returns."""

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


class BodyLimit:
    """A request body over ``limit`` bytes is a 413: refused by its Content-Length before it is read, or
    as soon as a chunked body passes the limit, so a 50 MB body never reaches the JSON parser. The body
    is read here (as the app would read it anyway) and handed on whole."""

    def __init__(self, app, limit: int):
        self.app, self.limit = app, limit

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http" or scope["method"] != "POST":
            return await self.app(scope, receive, send)
        refusal = openai_error(413, f"the request body is over this server's limit of {self.limit} bytes "
                                    "(serve.max_body_bytes)")
        declared = dict(scope["headers"]).get(b"content-length", b"0")
        if not declared.isdigit() or int(declared) > self.limit:
            return await refusal(scope, receive, send)
        body, more = bytearray(), True
        while more:
            message = await receive()
            if message["type"] != "http.request":
                return  # the client left before its body arrived: nobody to answer
            body += message.get("body", b"")
            more = message.get("more_body", False)
            if len(body) > self.limit:
                return await refusal(scope, receive, send)
        handed = False

        async def replay():
            nonlocal handed
            if handed:
                return await receive()  # after the body: the client's disconnect, when it comes
            handed = True
            return {"type": "http.request", "body": bytes(body), "more_body": False}

        await self.app(scope, replay, send)


class BearerKey:
    """``Authorization: Bearer KEY`` on every /v1 route, compared in constant time; 401 otherwise."""

    def __init__(self, app, key: str):
        self.app, self.expected = app, f"Bearer {key}".encode()

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http" or not scope["path"].startswith("/v1"):
            return await self.app(scope, receive, send)
        given = dict(scope["headers"]).get(b"authorization", b"")
        if not hmac.compare_digest(given, self.expected):
            refusal = openai_error(401, "a valid API key is required: send Authorization: Bearer <key> "
                                        "(the server's TUNELAB_API_KEY)")
            return await refusal(scope, receive, send)
        return await self.app(scope, receive, send)


def exposure_error(host: str, api_key: Optional[str]) -> Optional[str]:
    """A server reachable from other machines must ask for a key."""
    import ipaddress

    if api_key or host == "localhost":
        return None
    try:
        if ipaddress.ip_address(host).is_loopback:
            return None
    except ValueError:
        pass
    return (f"serve.host={host} is reachable from other machines: set {API_KEY_VARIABLE} (clients send it as "
            "Authorization: Bearer <key>), or bind 127.0.0.1")
