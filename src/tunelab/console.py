"""One place that silences third-party messages known to be harmless here, and only those.

Each entry names the library, the message and why it is noise for a tunelab user; anything
else a library logs or warns still shows, as do tunelab's own lines and progress bars.
"""

import logging
import re
import warnings

KNOWN_LOG_NOISE = [
    # (logger, message pattern, why it is harmless)
    ("torchao", r"Failed to load .*_C_(mxfp8|cutlass)",
     "torchao's CUDA-only kernels (mxfp8, cutlass) do not load on a machine without CUDA; tunelab uses none of them"),
    ("torchao.kernel.intmm", r"Warning: Detected no triton",
     "torchao's Triton kernels are for CUDA; on a CPU it uses its others"),
    ("bitsandbytes.backends.cpu.ops", r"Failed to load CPU gemm_4bit_forward from kernels-community",
     "on CPUs with AVX-512 BF16, bitsandbytes tries a hub kernel (the `kernels` package) and falls back to its own "
     "4-bit kernel, which is what runs on every other CPU; there is no hub here and nothing to install"),
    ("torch.utils._pytree", r".* is an Enum subclass and is now natively supported by torch.compile",
     "torchao registers its Enums the way torch 2.13 deprecates; nothing changes for the user"),
    ("mlflow.system_metrics.system_metrics_monitor", r"(Started|Stopping|Successfully terminated) .*monitoring|"
     r"Skip logging GPU metrics", "MLflow narrates its system-metrics sampler starting and stopping around every "
     "train and align stage; the samples themselves are in the run"),
    ("mlflow.store.db.utils", r"(Creating initial MLflow database tables|Updating database tables)",
     "MLflow announces that it made its sqlite store, on the first stage of a new project"),
]
KNOWN_WARNING_NOISE = [
    # (category, message pattern, why it is harmless)
    (FutureWarning, r"`is_gradient_checkpointing` is deprecated",
     "transformers' own Trainer still calls the name it deprecates"),
    (FutureWarning, r"`gradient_checkpointing` is deprecated and will be removed in v6",
     "TRL 1.16's configs declare the old name (defaulting it on), so tunelab must set that one to turn it off; "
     "transformers maps it to activation_checkpointing"),
    (UserWarning, r"TypedStorage is deprecated",
     "torch.load(weights_only=True) of the int8_dynamic variant's state dict (torch.ao's packed int8 weights) "
     "rebuilds them through torch's own deprecated storage class; nothing for a user to change"),
]


class _DropMatching(logging.Filter):
    def __init__(self, pattern: str):
        super().__init__()
        self.pattern = re.compile(pattern)

    def filter(self, record: logging.LogRecord) -> bool:
        return not self.pattern.match(record.getMessage())


def quiet_known_noise() -> None:
    """Idempotent; called by every stage and the CLI before any third-party library logs."""
    for name, pattern, _why in KNOWN_LOG_NOISE:
        logger = logging.getLogger(name)
        if not any(isinstance(f, _DropMatching) and f.pattern.pattern == pattern for f in logger.filters):
            logger.addFilter(_DropMatching(pattern))
    for category, pattern, _why in KNOWN_WARNING_NOISE:
        warnings.filterwarnings("ignore", message=pattern, category=category)
