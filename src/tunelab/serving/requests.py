"""What a request to tunelab's server may say, as pydantic models FastAPI validates before any handler
runs: a field of the wrong type, out of range or unknown is a 400 naming it (OpenAI's error shape),
never a 500 and never silently ignored.

Only what the engine honours for each request is accepted. transformers serve's continuous batching
decodes every request with one sampling setting (the server's, ``serve.sampling``), so temperature and
top_p are accepted only when they equal it; penalties, logit_bias, stop strings and seeds, which it
would apply from the first request to all, are refused as unknown fields.
"""

from typing import Annotated, Any, Literal, Optional

from pydantic import BaseModel, ConfigDict, Field, Json

Count = Annotated[int, Field(ge=1)]


class Strict(BaseModel):
    """No coercion ("16" is not 16) and no unknown field."""

    model_config = ConfigDict(extra="forbid", strict=True)


class TextPart(Strict):
    type: Literal["text"]
    text: str


class FunctionCall(Strict):
    name: str
    arguments: Json[dict[str, Any]]
    """A JSON object in a string, as the openai client sends it; the chat template reads it as a mapping."""


class ToolCall(Strict):
    id: str
    type: Literal["function"]
    function: FunctionCall


class Message(Strict):
    role: Literal["system", "developer", "user", "assistant", "tool"]
    content: str | list[TextPart] | None = None
    name: Optional[str] = None
    tool_calls: Optional[list[ToolCall]] = None
    tool_call_id: Optional[str] = None


class FunctionDefinition(Strict):
    name: str
    description: Optional[str] = None
    parameters: Optional[dict[str, Any]] = None
    strict: Optional[bool] = None


class Tool(Strict):
    type: Literal["function"]
    function: FunctionDefinition


class StreamOptions(Strict):
    include_usage: Optional[bool] = None
    """Honoured either way: the last chunk of a stream carries the usage."""


class Generation(Strict):
    """The fields both routes share."""

    model: Optional[str] = None
    max_tokens: Optional[Count] = None
    temperature: Optional[Annotated[float, Field(ge=0, le=2)]] = None
    top_p: Optional[Annotated[float, Field(gt=0, le=1)]] = None
    n: Optional[Literal[1]] = None
    """One choice per request: ask n times for n."""
    stream: Optional[bool] = None
    stream_options: Optional[StreamOptions] = None

    def budget(self) -> Optional[int]:
        """OpenAI's rule: max_completion_tokens supersedes max_tokens."""
        return self.max_tokens


class ChatRequest(Generation):
    messages: Annotated[list[Message], Field(min_length=1)]
    max_completion_tokens: Optional[Count] = None
    tools: Optional[list[Tool]] = None

    def budget(self) -> Optional[int]:
        return self.max_completion_tokens if self.max_completion_tokens is not None else self.max_tokens


class CompletionRequest(Generation):
    prompt: str


def token_budget(asked: Optional[int], prompt_tokens: int, context: int, ceiling: int) -> int:
    """The tokens a request may generate: what it asked for (``ceiling`` when it names none, as few as
    the context leaves), refused in one line past the context or past ``ceiling``
    (serve.max_completion_tokens)."""
    left = context - prompt_tokens
    if left <= 0:
        raise ValueError(f"this model's maximum context length is {context} tokens; the prompt has {prompt_tokens}: "
                         "shorten the prompt")
    if asked is None:
        return min(ceiling, left)
    if asked > ceiling:
        raise ValueError(f"max_tokens {asked} is more than this server allows per request ({ceiling}, "
                         "serve.max_completion_tokens)")
    if asked > left:
        raise ValueError(f"this model's maximum context length is {context} tokens; the prompt has {prompt_tokens} "
                         f"and max_tokens asks for {asked} more: shorten the prompt or lower max_tokens")
    return asked


def sampling_error(request: Generation, temperature: float, top_p: float) -> Optional[str]:
    """Why this engine cannot decode the request as it asks, or None."""
    asked = {"temperature": request.temperature, "top_p": request.top_p}
    served = {"temperature": temperature, "top_p": top_p}
    differ = [f"{key}={value}" for key, value in asked.items() if value is not None and value != served[key]]
    if not differ:
        return None
    return (f"{', '.join(differ)}: this engine decodes every request with temperature={temperature}, top_p={top_p} "
            "(serve.sampling; transformers' continuous batching shares one sampling setting); leave them out or "
            "send these, or serve with engine=vllm, which samples each request as it asks")
