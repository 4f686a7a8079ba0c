"""torchao's quantization-aware training scheme: what training simulates and loading applies."""

from typing import TYPE_CHECKING

from tunelab.errors import TunelabError

if TYPE_CHECKING:
    from tunelab.config.schema import QATOptions


def qat_base_config(options: "QATOptions"):
    """The post-training quantization that QAT simulates while training and applies at convert."""
    import torch
    from torchao.quantization import Int4WeightOnlyConfig, Int8DynamicActivationIntxWeightConfig, PerGroup

    if options.scheme == "int4_weight_only":
        if not torch.cuda.is_available():
            raise TunelabError("strategy.qat.scheme: int4_weight_only needs a CUDA GPU; "
                               "use int8_dynamic_activation_int4_weight on CPU")
        return Int4WeightOnlyConfig(group_size=options.group_size)
    return Int8DynamicActivationIntxWeightConfig(weight_dtype=torch.int4, weight_granularity=PerGroup(options.group_size))


def not_lm_head(module, name: str) -> bool:
    # lm_head shares its weight with the embeddings in tied models; quantizing it breaks the tie.
    import torch

    return isinstance(module, torch.nn.Linear) and name != "lm_head"


def qat_remove_fake_quantizers(model) -> None:
    """Back to plain linear layers holding the QAT-trained float weights."""
    from torchao.quantization import quantize_
    from torchao.quantization.qat import QATConfig

    quantize_(model, QATConfig(step="convert"), filter_fn=not_lm_head)


def qat_convert(model, options: "QATOptions") -> None:
    """Apply the real quantization: what QATConfig(step='convert') does to trained float weights."""
    from torchao.quantization import quantize_

    quantize_(model, qat_base_config(options), filter_fn=not_lm_head)
