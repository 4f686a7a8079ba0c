"""``serve``: the server of a deployed variant and its load test."""

from dataclasses import dataclass

from tunelab.config.schema.checks import require_range
from tunelab.errors import TunelabError


@dataclass(frozen=True)
class LoadTestConfig:
    """The ``load_test`` stage: the official openai client against the served variant on loopback."""

    enabled: bool
    """Off by default (it starts a server and keeps both cores busy for minutes); on, the stage
    serves ``serve.variant`` and measures it, off it records that it was skipped."""
    concurrency: list[int]
    """Requests in flight at each level; the batching gain is the highest level over the lowest."""
    requests: int
    """Requests per level and workload (the test split's first prompts, cycled)."""
    max_tokens: int
    """Tokens each request may generate."""
    decode_instruction: str
    """The ``decode`` workload sends this and each test row's text (a generative task's: its rendered
    prompt), so answers run to ``max_tokens``; the ``task`` workload sends the prompts as the task
    does (a classifier answers in a token or two)."""
    deadline_seconds: float
    """A level still running after this is stopped; its unfinished requests count as errors."""

    def __post_init__(self):
        if not self.concurrency or min(self.concurrency) < 1 or self.requests < 1 or self.max_tokens < 1:
            raise TunelabError("serve.load_test: concurrency >= 1, requests >= 1 and max_tokens >= 1 are required")


@dataclass(frozen=True)
class ServeSamplingConfig:
    """How the transformers engine samples every request (its continuous batching shares one setting)."""

    temperature: float
    """0: greedy, the evaluator's decoding."""
    top_p: float

    def __post_init__(self):
        require_range("serve.sampling.temperature", self.temperature, low=0, high=2)
        require_range("serve.sampling.top_p", self.top_p, low=0, low_open=True, high=1)


@dataclass(frozen=True)
class ServeConfig:
    """``tunelab serve`` and the ``load_test`` stage: a deployed variant behind an OpenAI-compatible API."""

    variant: str
    """A folder the quantize stage made (models/deploy/VARIANT), or trained (vLLM: a LoRA adapter);
    an engine refuses one it cannot load, saying why."""
    engine: str
    """A registered engine (tunelab.serving.engines): vllm on a CUDA GPU where it is installed,
    transformers (transformers serve's handlers, continuous batching) everywhere; auto: the first that applies."""
    vllm_cpu_env: str
    """vLLM's CPU build's environment (``make serve-env-vllm``); where it exists, engine=vllm runs on a CPU."""
    host: str
    port: int
    max_concurrency: int
    """Requests the server holds at once; one more gets a 503 (vLLM: its max_num_seqs)."""
    sampling: ServeSamplingConfig
    max_completion_tokens: int
    """The most tokens one request may generate; what a request naming none gets, within the context."""
    max_body_bytes: int
    """A larger request body is a 413."""
    kv_cache_share: float
    """On a CPU, the share of free memory the KV cache takes (transformers' continuous batching, vLLM's CPU build)."""
    shutdown_seconds: float
    """After Ctrl-C or SIGTERM, how long requests in flight may finish."""
    load_test: LoadTestConfig

    def __post_init__(self):
        if not 0 < self.port < 65536 or self.max_concurrency < 1:
            raise TunelabError(f"serve: port {self.port} must be 1-65535 and max_concurrency >= 1")
        require_range("serve.max_completion_tokens", self.max_completion_tokens, low=1)
        require_range("serve.max_body_bytes", self.max_body_bytes, low=1024)
        require_range("serve.kv_cache_share", self.kv_cache_share, low=0, low_open=True, high=0.9)
        require_range("serve.shutdown_seconds", self.shutdown_seconds, low=0, low_open=True)
