"""Peak memory of this process, the one measurement training and the benchmark share."""

import resource
import sys

# ru_maxrss is in bytes on macOS and KiB on Linux
RU_MAXRSS_BYTES = 1 if sys.platform == "darwin" else 1024


def peak_rss_mb() -> float:
    """Peak resident set size of this process, MiB."""
    return round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * RU_MAXRSS_BYTES / 2**20, 1)


def peak_gpu_mb() -> float | None:
    """Peak CUDA memory allocated by this process, MiB; None without CUDA."""
    import torch

    return round(torch.cuda.max_memory_allocated() / 2**20, 1) if torch.cuda.is_available() else None


def peak_memory_mb() -> float:
    """The memory that limits the run: peak GPU memory where CUDA is used, else peak RSS."""
    gpu = peak_gpu_mb()
    return gpu if gpu is not None else peak_rss_mb()
