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

    return {"cpu": cpu_model(), "cpu_count": os.cpu_count(), "torch_threads": torch.get_num_threads(),
            "python": platform.python_version(), "platform": platform.platform(), **library_versions(), **gpu()}
