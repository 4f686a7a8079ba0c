"""What a benchmark figure was measured on: CPU, threads, library versions, GPU and driver."""

import os
import platform
from importlib.metadata import PackageNotFoundError, version

LIBRARIES = ("torch", "transformers", "peft", "bitsandbytes", "torchao", "accelerate", "llama-cpp-python")


def cpu_model() -> str:
    try:
        with open("/proc/cpuinfo") as info:
            for line in info:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


ISA_FLAGS = ("avx2", "avx512f", "avx512_vnni", "avx512_bf16", "amx_tile", "amx_int8", "amx_bf16")
"""The instruction sets that pick PyTorch's int8 and bf16 CPU kernels: the same int8 model scores and
runs differently on an AVX2 host and an AVX-512 one (docs/results.md)."""


def cpu_isa() -> list[str]:
    """Which of :data:`ISA_FLAGS` this CPU lists (/proc/cpuinfo's flags; [] where there is none)."""
    try:
        with open("/proc/cpuinfo") as info:
            flags = next((line.split(":", 1)[1].split() for line in info if line.startswith("flags")), [])
    except OSError:
        return []
    return [flag for flag in ISA_FLAGS if flag in flags]


def library_versions() -> dict[str, str]:
    versions = {}
    for name in LIBRARIES:
        try:
            versions[name] = version(name)
        except PackageNotFoundError:
            versions[name] = "not installed"
    return versions


def gpu() -> dict:
    import torch  # here, not at the top: ~2 s to import, and a skipped load test records no environment

    if not torch.cuda.is_available():
        return {}
    info = {"gpu": torch.cuda.get_device_name(), "cuda": torch.version.cuda}
    try:
        import pynvml

        pynvml.nvmlInit()
        info["driver"] = pynvml.nvmlSystemGetDriverVersion()
    except Exception as error:  # the driver query is informative only
        info["driver"] = f"unknown ({error})"
    return info


def fingerprint() -> dict:
    import torch

    return {"cpu": cpu_model(), "cpu_isa": cpu_isa(), "quantized_engine": torch.backends.quantized.engine,
            "cpu_count": os.cpu_count(), "torch_threads": torch.get_num_threads(),
            "python": platform.python_version(), "platform": platform.platform(), **library_versions(), **gpu()}
