"""The serving engines, one registry entry each: which variants an engine can load, the command
that serves one, and why it does not apply here. ``serve.engine=auto`` takes the first that applies.

| engine       | where                                   | what it serves                                                    |
|--------------|-----------------------------------------|-------------------------------------------------------------------|
| vllm         | a CUDA GPU, vllm installed              | merged or cast folders; trained as a LoRA adapter on the base     |
| vllm         | a CPU, its build in serve.vllm_cpu_env  | merged or cast folders                                            |
| transformers | anywhere                                | merged or cast folders, continuous batching (tunelab.serving.app) |

vLLM runs with prefix caching on and samples each request as it asks. Its CPU build pins an older
transformers than tunelab's, so it lives in an environment of its own (``make serve-env-vllm``)
and runs as that environment's python; tunelab only starts it.

transformers serve cannot load a PEFT adapter, an int8_dynamic state dict or a tunelab GGUF
folder: serve ``merged``, the same weights. A server is always a process of its own (so
Ctrl-C, SIGTERM and a crash are the engine's to handle), started by :class:`Server`.
"""

import importlib.util
import json
import os
import subprocess
import sys
import time
import urllib.request
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Optional

import tunelab
from tunelab.config.schema import ServeConfig
from tunelab.errors import TunelabError
from tunelab.paths import PATHS, TRAINED, Paths
from tunelab.registry import Registry
from tunelab.serving.guards import API_KEY_VARIABLE

FOLDER_LOADERS = ("float", "cast")
"""Deployed variants whose model/ is a plain Hugging Face folder (models.loading.LOADERS keys)."""


@dataclass(frozen=True)
class Served:
    """What a server loads: a model folder, and a LoRA adapter over it (vLLM only)."""

    name: str
    folder: Path
    adapter: Optional[Path] = None


def served_folder(variant: str, paths: Paths = PATHS) -> Served:
    """The variant as an engine loads it; one that no engine loads is refused, saying what to serve."""
    from tunelab.models.loading import deploy_recipe, trained_recipe

    name = f"tunelab-{variant}"
    if variant == TRAINED:
        recipe = trained_recipe(paths.trained_model)
        if recipe["adapter"] and not recipe["prompt_learning"]:
            return Served(name, paths.base_model, paths.trained_model)
        raise TunelabError(f"serve.variant: trained ({recipe['strategy']}) is not a LoRA-style adapter: serve merged")
    folder = paths.model(variant)
    if not folder.is_dir():
        raise TunelabError(f"serve.variant: {variant!r} is not in {paths.deploy}/; the quantize stage makes "
                           "quantize.variants (run `make run` first, or add it to quantize.variants)")
    recipe, adapter = deploy_recipe(folder), (folder / "adapter").exists()
    if recipe["loader"] not in FOLDER_LOADERS or adapter:
        raise TunelabError(f"serve.variant: {variant} is a {recipe['loader']} folder only tunelab's loader rebuilds"
                           f"{' (with its prompt-learning adapter)' if adapter else ''}: "
                           "serve merged, the same weights in float32")
    return Served(name, folder / "model")


@dataclass(frozen=True)
class Engine:
    name: str
    command: Callable[[Served, ServeConfig], list[str]]
    """The server's command line."""
    unavailable: Callable[[Served, ServeConfig], Optional[str]]
    """Why it cannot serve this here, or None."""


ENGINES: Registry[Engine] = Registry("serve.engine")


def transformers_command(served: Served, settings: ServeConfig) -> list[str]:
    return [sys.executable, "-m", "tunelab.serving.app", str(served.folder), "--name", served.name,
            "--host", settings.host, "--port", str(settings.port), "--max-concurrency", str(settings.max_concurrency),
            "--temperature", str(settings.sampling.temperature), "--top-p", str(settings.sampling.top_p),
            "--max-completion-tokens", str(settings.max_completion_tokens),
            "--max-body-bytes", str(settings.max_body_bytes), "--shutdown-seconds", str(settings.shutdown_seconds),
            "--kv-cache-share", str(settings.kv_cache_share)]


def transformers_unavailable(served: Served, settings: ServeConfig) -> Optional[str]:
    if served.adapter is not None:
        return "transformers serve cannot load a PEFT adapter: serve merged (the adapter merged into the base)"
    return None


def vllm_command(served: Served, settings: ServeConfig) -> list[str]:
    if vllm_cpu_python(settings) is not None:
        return vllm_cpu_command(served, settings)
    command = ["vllm", "serve", str(served.folder), "--host", settings.host, "--port", str(settings.port),
               "--enable-prefix-caching", "--max-num-seqs", str(settings.max_concurrency)]
    if served.adapter is None:
        return [*command, "--served-model-name", served.name]
    return [*command, "--enable-lora", "--lora-modules", f"{served.name}={served.adapter}"]


def vllm_cpu_python(settings: ServeConfig) -> Optional[Path]:
    """The CPU build's python, where there is no CUDA GPU and ``make serve-env-vllm`` made the environment."""
    import torch

    python = Path(settings.vllm_cpu_env).resolve() / "bin" / "python"
    return python if python.is_file() and not torch.cuda.is_available() else None


def vllm_cpu_command(served: Served, settings: ServeConfig) -> list[str]:
    """vLLM's CPU build: run from the model folder's parent with the folder's bare name, so /v1/models
    (which shows the model path as its root) names no path of this machine; its OpenAI server module,
    because the ``vllm`` command looks up the version of a package named vllm, and this one is vllm-cpu;
    its portable kernels (VLLM_TARGET_DEVICE=cpu: no AVX-512 kernels on an AVX2 CPU); and a KV cache
    of serve.kv_cache_share of the free memory, as the transformers engine takes (vLLM's own default,
    4 GiB, is a fifth of a 24 GB host)."""
    free_gib = os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE") / 2**30
    kv_cache_gib = max(1, int(free_gib * settings.kv_cache_share))
    return ["env", "-C", str(served.folder.parent), "VLLM_TARGET_DEVICE=cpu", f"VLLM_CPU_KVCACHE_SPACE={kv_cache_gib}",
            str(vllm_cpu_python(settings)), "-m", "vllm.entrypoints.openai.api_server", "--model", served.folder.name,
            "--served-model-name", served.name, "--host", settings.host, "--port", str(settings.port),
            "--enable-prefix-caching", "--max-num-seqs", str(settings.max_concurrency)]


def vllm_unavailable(served: Served, settings: ServeConfig) -> Optional[str]:
    import torch

    if vllm_cpu_python(settings) is not None:
        if served.adapter is not None:
            return "vLLM's CPU build serves merged folders here: serve merged (the adapter merged into the base)"
        return None
    if not torch.cuda.is_available():
        return (f"vLLM needs a CUDA GPU, or its CPU build in {settings.vllm_cpu_env} (make serve-env-vllm), and this "
                "machine has neither (engine=transformers serves on a CPU)")
    if importlib.util.find_spec("vllm") is None:
        return "vllm is not installed (pip install vllm==<the version for your CUDA>)"
    return None


ENGINES.register(Engine("vllm", vllm_command, vllm_unavailable))
ENGINES.register(Engine("transformers", transformers_command, transformers_unavailable))


REGISTERED = "models:/"


def registered_folder(uri: str) -> Served:
    """A model registered by ``tunelab register`` (``models:/NAME@champion``, ``models:/NAME/3``),
    fetched from the tracking server's registry: its artifact is the variant's folder."""
    import mlflow
    from mlflow.exceptions import MlflowException

    try:
        local = Path(mlflow.artifacts.download_artifacts(artifact_uri=uri))
    except MlflowException as error:
        raise TunelabError(f"serve.variant: {uri}: {(str(error).splitlines() or ['not found'])[0]} (tracking URI: "
                           f"{mlflow.get_tracking_uri()})") from None
    folder = local / "artifacts" / "model"
    if not (folder / "config.json").is_file():
        raise TunelabError(f"serve.variant: {uri} is not a model `tunelab register` made (no artifacts/model folder)")
    return Served("tunelab-" + uri.removeprefix(REGISTERED).replace("/", "-").replace("@", "-"), folder)


def choose(settings: ServeConfig, paths: Paths = PATHS) -> tuple[Engine, Served]:
    """The engine and what it serves; an engine that cannot, or a variant no engine loads, is one line."""
    registered = settings.variant.startswith(REGISTERED)
    served = registered_folder(settings.variant) if registered else served_folder(settings.variant, paths)
    if settings.engine != "auto":
        engine = ENGINES[settings.engine]
        if reason := engine.unavailable(served, settings):
            raise TunelabError(f"serve.engine={engine.name}: {reason}")
        return engine, served
    reasons = {engine.name: engine.unavailable(served, settings) for engine in ENGINES}
    for engine in ENGINES:
        if reasons[engine.name] is None:
            return engine, served
    raise TunelabError("serve: no engine can serve " + settings.variant + ": "
                       + "; ".join(f"{name}: {why}" for name, why in reasons.items()))


def child_env(extra: dict | None = None) -> dict:
    """This environment and ``extra``, for a server that imports this tunelab (a stage's tree, not the
    editable install's) and never the hub; vLLM reads the key tunelab's server reads."""
    source = str(Path(tunelab.__file__).resolve().parents[1])
    environment = {**os.environ, **(extra or {})}
    key = {"VLLM_API_KEY": environment[API_KEY_VARIABLE]} if environment.get(API_KEY_VARIABLE) else {}
    return {**environment, "PYTHONPATH": os.pathsep.join([source, os.environ.get("PYTHONPATH", "")]).rstrip(os.pathsep),
            "HF_HUB_OFFLINE": os.environ.get("HF_HUB_OFFLINE", "1"), **key}


class Server:
    """A server process on loopback, up (``/health`` answers) inside the ``with``, stopped by SIGTERM after."""

    def __init__(self, command: list[str], base_url: str, log: Path, start_timeout: float = 300.0, cwd: Path | None = None,
                 env: dict | None = None):
        self.command, self.base_url, self.log, self.start_timeout = command, base_url.rstrip("/"), log, start_timeout
        self.cwd, self.env = cwd, env or {}
        self.process: subprocess.Popen | None = None

    def __enter__(self) -> "Server":
        self.log.parent.mkdir(parents=True, exist_ok=True)
        with self.log.open("w") as log:
            # a session of its own: a signal to the caller's process group (a test runner's, a shell's) is not for it
            self.process = subprocess.Popen(self.command, stdout=log, stderr=subprocess.STDOUT, env=child_env(self.env),
                                            start_new_session=True, cwd=self.cwd)
        deadline = time.monotonic() + self.start_timeout
        while not self.healthy():
            if self.process.poll() is not None or time.monotonic() > deadline:
                self.stop()
                tail = (self.log.read_text(errors="replace").strip().splitlines() or ["no output"])[-1]
                raise TunelabError(f"the server ({' '.join(self.command[:4])} ...) did not start: {tail} "
                                   f"(whole log: {self.log})")
            time.sleep(1)
        return self

    def healthy(self) -> bool:
        """/health answers 200, from this server: another process on the port (one that bound it first)
        is not it. tunelab's app says its pid; vLLM's /health has no body, and its exit is caught instead."""
        if self.process is not None and self.process.poll() is not None:
            return False
        try:
            with urllib.request.urlopen(self.base_url.removesuffix("/v1") + "/health", timeout=2) as answer:
                body = answer.read()
                pid = json.loads(body).get("pid") if body.startswith(b"{") else None
                return answer.status == 200 and pid in (None, self.process.pid if self.process else None)
        except (OSError, ValueError):
            return False

    def stop(self) -> int | None:
        if self.process is None or self.process.poll() is not None:
            return self.process.returncode if self.process else None
        self.process.terminate()
        try:
            return self.process.wait(timeout=60)
        except subprocess.TimeoutExpired:
            self.process.kill()
            return self.process.wait()

    def __exit__(self, *exc) -> None:
        self.stop()
