"""``quantize`` and ``bench``: the deployable variants and how their inference cost is measured."""

from dataclasses import dataclass

from tunelab.errors import TunelabError


@dataclass(frozen=True)
class QuantizeConfig:
    """The deployable variants the ``quantize`` stage makes from the trained model."""

    variants: list[str]
    """Registered deployment methods (tunelab.deploy.methods): merged, int8_dynamic, nf4, int8,
    int8_weight_only, qat, bf16, fp16, gguf_q8_0, gguf_f16, wanda, wanda_2_4; each one that
    does not apply here (bf16 on a CPU, qat for a LoRA model) is skipped with its reason."""
    int8_dynamic_keep_float: list[str]
    """Linear layers int8_dynamic leaves in float32 (last name part). down_proj's inputs carry
    activation outliers that per-tensor int8 cannot hold; lm_head is the tied embedding."""
    wanda_sparsity: float
    """The share of each Linear's weights the ``wanda`` variant zeroes (``wanda_2_4`` is 50%, two of every four)."""
    wanda_calibration_rows: int
    """Wanda's activation norms come from the first this many formatted train rows."""

    def __post_init__(self):
        if len(set(self.variants)) != len(self.variants):
            raise TunelabError(f"quantize.variants: {self.variants} names a variant twice")
        if not 0 < self.wanda_sparsity < 1 or self.wanda_calibration_rows < 1:
            raise TunelabError(f"quantize: wanda_sparsity {self.wanda_sparsity} must be in (0, 1) and "
                               f"wanda_calibration_rows {self.wanda_calibration_rows} at least 1")


@dataclass(frozen=True)
class BenchConfig:
    """The ``benchmark`` stage: inference cost of every deployable variant."""

    batch_sizes: list[int]
    """Throughput is measured at each batch size, with the KV cache."""
    new_tokens: int
    """Tokens generated per sequence (EOS ignored, so every run decodes the same count)."""
    repeats: int
    """Timed repeats after one warm-up; medians are reported."""

    def __post_init__(self):
        if not self.batch_sizes or min(self.batch_sizes) < 1 or self.new_tokens < 2 or self.repeats < 1:
            raise TunelabError("bench: batch_sizes >= 1, new_tokens >= 2 and repeats >= 1 are required")
