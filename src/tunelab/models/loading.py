"""Every way tunelab loads a model, in one place: the base from its source, the saved base, the
trained model, and each deployed variant as a fresh process loads it.

| variant        | folder (tunelab.paths) | how it loads                                                |
|----------------|-------------------------|-------------------------------------------------------------|
| base           | models/base             | float32: the prompting baselines                            |
| trained        | models/trained          | by its recipe (tunelab_strategy.json): adapter on the base, |
|                |                         | or its own weights (QAT's converted on load)                |
| aligned        | models/aligned          | the same way: the align stage saves merged float32 weights  |
| any other name | models/deploy/<name>    | by its recipe (tunelab_deploy.json): the loader its         |
|                |                         | deployment method names (tunelab.deploy.methods)            |

The recipes written beside each model say how to load it, so this module needs neither
registry: a stage that only loads models does not depend on how they are trained or made.
"""

import json
from pathlib import Path
from typing import TYPE_CHECKING, Callable, Optional

from tunelab.errors import TunelabError
from tunelab.models.base import source_location
from tunelab.paths import ALIGNED, BASE, PATHS, TRAINED, Paths

if TYPE_CHECKING:
    from tunelab.config.schema import ModelConfig, QuantizationOptions

STRATEGY_FILE = "tunelab_strategy.json"
DEPLOY_FILE = "tunelab_deploy.json"
INT8_DYNAMIC_WEIGHTS = "int8_dynamic.pt"


def device() -> str:
    import torch

    return "cuda" if torch.cuda.is_available() else "cpu"


def on_device(model):
    """On the GPU where there is one (a bitsandbytes 4-bit model is placed when loaded)."""
    import torch

    if torch.cuda.is_available() and not getattr(model, "is_loaded_in_4bit", False):
        return model.to("cuda")
    return model


# --- the base model --------------------------------------------------------------------------


def load_source_model(config: "ModelConfig"):
    """(model, tokenizer) from the configured source in float32, with the gguf quantization config dropped."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    location, kwargs = source_location(config)
    try:
        tokenizer = AutoTokenizer.from_pretrained(location, **kwargs)
        model = AutoModelForCausalLM.from_pretrained(location, dtype=torch.float32, **kwargs)
    except OSError as error:
        hint = " (no hub is reachable with HF_HUB_OFFLINE=1; use model.source=local_dir)" if config.source == "hub" else ""
        raise TunelabError(f"model: cannot load {location}{hint}: {str(error).splitlines()[0]}") from None
    # A GGUF load leaves a gguf quantization config on the model, although its weights are
    # now plain float32; saved with it, the folder would not reload or train as plain HF.
    if getattr(model, "hf_quantizer", None) is not None:
        model.hf_quantizer.remove_quantization_config(model)
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token  # batching needs one; the loss mask ignores it
    return model, tokenizer


def float_model(folder: Path, dtype: str = "float32", gguf_file: str | None = None):
    """``dtype``: a torch dtype's name, or "auto" (what the folder's config says); ``gguf_file``:
    a GGUF in the folder, dequantized to ``dtype`` by transformers' GGUF loader."""
    import torch
    from transformers import AutoModelForCausalLM

    extra = {"gguf_file": gguf_file} if gguf_file else {}
    return AutoModelForCausalLM.from_pretrained(folder, dtype=dtype if dtype == "auto" else getattr(torch, dtype),
                                                **extra)


def quantized_model(folder: Path, quantization_config=None):
    """A model with quantized weights (bitsandbytes, torchao), on the device its kernels run on."""
    from transformers import AutoModelForCausalLM

    extra = {"quantization_config": quantization_config} if quantization_config is not None else {}
    return AutoModelForCausalLM.from_pretrained(folder, device_map={"": device()}, **extra)


def load_base(base_dir: Path, quantization: Optional["QuantizationOptions"] = None):
    """The saved base model in float32, or with bitsandbytes 4-bit weights (QLoRA's ``quantization``)."""
    import torch
    from transformers import BitsAndBytesConfig

    if not (base_dir / "config.json").is_file():
        raise TunelabError(f"{base_dir}: no model found; run the base stage first")
    if quantization is None:
        return float_model(base_dir)
    return quantized_model(base_dir, BitsAndBytesConfig(
        load_in_4bit=True, bnb_4bit_quant_type=quantization.quant_type, bnb_4bit_use_double_quant=quantization.double_quant,
        bnb_4bit_compute_dtype=torch.bfloat16 if torch.cuda.is_available() else torch.float32))


# --- the trained model -----------------------------------------------------------------------


def trained_recipe(trained_dir: Path) -> dict:
    """What the train stage recorded: the strategy, adapter or weights, and its 4-bit base or QAT scheme."""
    recipe_file = trained_dir / STRATEGY_FILE
    if not recipe_file.is_file():
        raise TunelabError(f"{trained_dir}: no {STRATEGY_FILE}; run the train stage first")
    return json.loads(recipe_file.read_text())


def convert_on_load(model, recipe: dict):
    """QAT-trained weights are saved in float (torchao's converted tensors do not serialise to
    safetensors): the scheme they were trained for is applied on load."""
    if "qat" in recipe:
        from tunelab.config.schema import QATOptions
        from tunelab.models.qat import qat_convert

        qat_convert(model, QATOptions(**recipe["qat"]))
    return model


def load_trained(trained_dir: Path, base_dir: Path):
    """The model a later stage evaluates: adapter on base, or the strategy's own weights."""
    recipe = trained_recipe(trained_dir)
    if not recipe["adapter"]:
        return convert_on_load(float_model(trained_dir), recipe)
    from peft import PeftModel

    from tunelab.config.schema import QuantizationOptions

    quantization = QuantizationOptions(**recipe["quantization"]) if "quantization" in recipe else None
    return PeftModel.from_pretrained(load_base(base_dir, quantization), trained_dir)


def merged_model(trained_dir: Path, base_dir: Path):
    """The float32 model to deploy: the adapter merged where it can be, else the base (prompt
    learning keeps its adapter beside it); full weights as trained (QAT's still unconverted)."""
    recipe = trained_recipe(trained_dir)
    if recipe["prompt_learning"]:
        return load_base(base_dir)
    if not recipe["adapter"]:
        return float_model(trained_dir)
    from peft import PeftModel

    # QLoRA's adapter too goes onto the float base: its 4-bit base is this one, quantized
    return PeftModel.from_pretrained(load_base(base_dir), trained_dir).merge_and_unload()


# --- deployed variants -----------------------------------------------------------------------


def with_adapter(model, folder: Path):
    """Prompt/prefix tuning's adapter on top of the deployed base, where the variant keeps one."""
    if not (folder / "adapter").is_dir():
        return model
    from peft import PeftModel

    return PeftModel.from_pretrained(model, folder / "adapter")


def int8_dynamic(model, keep_float: list[str], inplace: bool = False):
    """torch.ao dynamic quantization: int8 Linear weights, activations quantized per batch, except
    the Linear layers named in ``keep_float`` (the last part of their name, e.g. down_proj)."""
    import warnings

    import torch
    from torch.ao.quantization import default_dynamic_qconfig

    spec = {name: default_dynamic_qconfig for name, module in model.named_modules()
            if isinstance(module, torch.nn.Linear) and name.rsplit(".", 1)[-1] not in keep_float}
    with warnings.catch_warnings():  # torch.ao.quantization's deprecation notice; the CPU kernels are what we want
        warnings.simplefilter("ignore")
        return torch.ao.quantization.quantize_dynamic(model, spec, dtype=torch.qint8, inplace=inplace)


def load_float_variant(folder: Path, recipe: dict):
    return with_adapter(on_device(float_model(folder / "model")), folder)


def load_qat_variant(folder: Path, recipe: dict):
    return with_adapter(on_device(convert_on_load(float_model(folder / "model"), recipe)), folder)


def load_cast_variant(folder: Path, recipe: dict):
    return with_adapter(on_device(float_model(folder / "model", "auto")), folder)


def load_gguf_variant(folder: Path, recipe: dict):
    return with_adapter(on_device(float_model(folder / "model", gguf_file=recipe["gguf_file"])), folder)


def load_quantized_variant(folder: Path, recipe: dict):
    return with_adapter(quantized_model(folder / "model"), folder)


def load_int8_dynamic_variant(folder: Path, recipe: dict):
    """Quantized modules cannot be filled by PEFT's adapter loading (it loads the whole model's state
    non-strictly, and a quantized Linear insists on its scale), so the adapter goes on the float
    skeleton first and the base is quantized in place under it before its int8 weights load.
    CPU kernels: it stays on the CPU."""
    import torch
    from transformers import AutoConfig, AutoModelForCausalLM

    target = folder / "model"
    skeleton = AutoModelForCausalLM.from_config(AutoConfig.from_pretrained(target), dtype=torch.float32)
    model = with_adapter(skeleton, folder)
    int8_dynamic(skeleton, recipe["keep_float"], inplace=True)
    skeleton.load_state_dict(torch.load(target / INT8_DYNAMIC_WEIGHTS, weights_only=True))
    return model


LOADERS: dict[str, Callable[[Path, dict], object]] = {
    "float": load_float_variant,  # float32 weights
    "qat": load_qat_variant,  # QAT-trained float32 weights, converted to the trained scheme on load
    "cast": load_cast_variant,  # bf16/fp16 weights, in the dtype they were saved in
    "quantized": load_quantized_variant,  # a quantization_config transformers applies (bitsandbytes, torchao)
    "gguf": load_gguf_variant,  # a GGUF file (llama.cpp's format), dequantized to float32
    "int8_dynamic": load_int8_dynamic_variant,  # a torch.ao state dict
}
"""How each on-disk form of a deployed variant loads; a deployment method names one."""


def deploy_recipe(folder: Path) -> dict:
    recipe_file = folder / DEPLOY_FILE
    if not recipe_file.is_file():
        raise TunelabError(f"{folder}: no {DEPLOY_FILE}; run the quantize stage first")
    return json.loads(recipe_file.read_text())


def load_deployed(folder: Path):
    """A variant as a fresh process loads it from disk, on the device its kernels run on."""
    recipe = deploy_recipe(folder)
    return LOADERS[recipe["loader"]](folder, recipe).eval()


def load_variant(name: str, paths: Paths = PATHS):
    """The variant's model in eval mode, on the GPU where there is one."""
    if name == BASE:
        return on_device(load_base(paths.base_model)).eval()
    if name in (TRAINED, ALIGNED):
        return on_device(load_trained(paths.model(name), paths.base_model)).eval()
    if paths.model(name).is_dir():
        return load_deployed(paths.model(name))
    raise TunelabError(f"unknown model variant {name!r}: not base, trained, aligned, or a folder in {paths.deploy}/ "
                       "(the quantize stage makes those)")


def continues_a_cache(model) -> bool:
    """PEFT prompt learning (prompt/prefix tuning) prepends its own tokens or cache, so a shared
    prefix cache cannot be passed in; every other variant can reuse one."""
    config = getattr(model, "active_peft_config", None)
    return not (config is not None and config.is_prompt_learning)
