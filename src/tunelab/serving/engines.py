"""The serving engines, one registry entry each: which variants an engine can load, the command
that serves one, and why it does not apply here. ``serve.engine=auto`` takes the first that applies.

| engine       | where                      | what it serves                                                   |
|--------------|----------------------------|------------------------------------------------------------------|
| vllm         | a CUDA GPU, vllm installed | merged or cast folders; trained as a LoRA adapter on the base    |
| transformers | anywhere                   | merged or cast folders, continuous batching (tunelab.serving.app) |

vLLM runs with prefix caching on.

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
from tunelab.layout import LAYOUT, TRAINED, Layout
from tunelab.registry import Registry

FOLDER_LOADERS = ("float", "cast")
"""Deployed variants whose model/ is a plain Hugging Face folder (models.loading.LOADERS keys)."""


@dataclass(frozen=True)
class Served:
    """What a server loads: a model folder, and a LoRA adapter over it (vLLM only)."""

    name: str
    folder: Path
    adapter: Optional[Path] = None


def served_folder(variant: str, layout: Layout = LAYOUT) -> Served:
    """The variant as an engine loads it; one that no engine loads is refused, saying what to serve."""
    from tunelab.models.loading import deploy_recipe, trained_recipe

    name = f"tunelab-{variant}"
    if variant == TRAINED:
        recipe = trained_recipe(layout.trained_model)
        if recipe["adapter"] and not recipe["prompt_learning"]:
            return Served(name, layout.base_model, layout.trained_model)
        raise TunelabError(f"serve.variant: trained ({recipe['strategy']}) is not a LoRA-style adapter: serve merged")
    folder = layout.model(variant)
    if not folder.is_dir():
        raise TunelabError(f"serve.variant: {variant!r} is not in {layout.deploy}/; the quantize stage makes "
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
    unavailable: Callable[[Served], Optional[str]]
    """Why it cannot serve this here, or None."""


ENGINES: Registry[Engine] = Registry("serve.engine")


def transformers_command(served: Served, settings: ServeConfig) -> list[str]:
    return [sys.executable, "-m", "tunelab.serving.app", str(served.folder), "--name", served.name,
            "--host", settings.host, "--port", str(settings.port), "--max-concurrency", str(settings.max_concurrency)]


def transformers_unavailable(served: Served) -> Optional[str]:
    if served.adapter is not None:
        return "transformers serve cannot load a PEFT adapter: serve merged (the adapter merged into the base)"
    return None


def vllm_command(served: Served, settings: ServeConfig) -> list[str]:
    command = ["vllm", "serve", str(served.folder), "--host", settings.host, "--port", str(settings.port),
               "--enable-prefix-caching", "--max-num-seqs", str(settings.max_concurrency)]
    if served.adapter is None:
        return [*command, "--served-model-name", served.name]
    return [*command, "--enable-lora", "--lora-modules", f"{served.name}={served.adapter}"]


def vllm_unavailable(served: Served) -> Optional[str]:
    import torch

    if not torch.cuda.is_available():
        return "vLLM needs a CUDA GPU and this machine has none (engine=transformers serves on a CPU)"
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


def choose(settings: ServeConfig, layout: Layout = LAYOUT) -> tuple[Engine, Served]:
    """The engine and what it serves; an engine that cannot, or a variant no engine loads, is one line."""
    registered = settings.variant.startswith(REGISTERED)
    served = registered_folder(settings.variant) if registered else served_folder(settings.variant, layout)
    if settings.engine != "auto":
        engine = ENGINES[settings.engine]
        if reason := engine.unavailable(served):
            raise TunelabError(f"serve.engine={engine.name}: {reason}")
        return engine, served
    reasons = {engine.name: engine.unavailable(served) for engine in ENGINES}
    for engine in ENGINES:
        if reasons[engine.name] is None:
            return engine, served
    raise TunelabError("serve: no engine can serve " + settings.variant + ": "
                       + "; ".join(f"{name}: {why}" for name, why in reasons.items()))


def child_env() -> dict:
    """The server imports this tunelab (a stage's tree, not the editable install's) and never the hub."""
    source = str(Path(tunelab.__file__).resolve().parents[1])
    return {**os.environ, "PYTHONPATH": os.pathsep.join([source, os.environ.get("PYTHONPATH", "")]).rstrip(os.pathsep),
            "HF_HUB_OFFLINE": os.environ.get("HF_HUB_OFFLINE", "1")}


class Server:
    """A server process on loopback, up (``/health`` answers) inside the ``with``, stopped by SIGTERM after."""

    def __init__(self, command: list[str], base_url: str, log: Path, start_timeout: float = 300.0, cwd: Path | None = None):
        self.command, self.base_url, self.log, self.start_timeout = command, base_url.rstrip("/"), log, start_timeout
        self.cwd = cwd
        self.process: subprocess.Popen | None = None

    def __enter__(self) -> "Server":
        self.log.parent.mkdir(parents=True, exist_ok=True)
        with self.log.open("w") as log:
            # a session of its own: a signal to the caller's process group (a test runner's, a shell's) is not for it
            self.process = subprocess.Popen(self.command, stdout=log, stderr=subprocess.STDOUT, env=child_env(),
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
