"""The deployment methods, one registry entry each: how a variant is made from the merged
model, how a fresh process loads it, and why it does not apply here.

| variant           | how it is made                                          | on disk                          |
|-------------------|---------------------------------------------------------|----------------------------------|
| merged            | adapter merged into the base (LoRA, IA3, QLoRA), fp32   | safetensors                      |
| int8_dynamic      | torch.ao dynamic int8 of every Linear (CPU kernels)     | int8 state dict (torch.save)     |
| nf4, int8         | bitsandbytes 4-bit NF4 / LLM.int8 weights               | safetensors + quantization_config|
| int8_weight_only  | torchao Int8WeightOnlyConfig through TorchAoConfig       | safetensors + quantization_config|
| qat               | strategy=qat only: the QAT-trained weights, converted   | fp32 weights + scheme; converted on load |
| bf16, fp16        | casts, made on a CUDA GPU only                          | safetensors                      |
| gguf_q8_0, gguf_f16 | llama.cpp's converter (tunelab.deploy.gguf)            | model.gguf + Modelfile (Ollama)  |
| wanda, wanda_2_4  | Wanda pruning, unstructured or 2:4 (tunelab.deploy.pruning) | fp32 safetensors, zeros dense  |

PEFT prompt/prefix tuning cannot be merged: their variants quantize the base and keep the
adapter beside it (``adapter/``), applied on load. Each folder has ``tunelab_deploy.json``
saying how to load it, so every variant reloads from disk in a fresh process. A new method is
one ``METHODS.register(DeployMethod(...))`` here plus its name in conf/quantize.
"""

import importlib.util
import json
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Optional

from tunelab.config.schema import QuantizeConfig
from tunelab.deploy.gguf import GGUF_FILE, gguf_export
from tunelab.deploy.pruning import SEMI_STRUCTURED_BLOCK, wanda_export
from tunelab.models.loading import (
    DEPLOY_FILE,
    INT8_DYNAMIC_WEIGHTS,
    LOADERS,
    float_model,
    int8_dynamic,
    quantized_model,
    trained_recipe,
)
from tunelab.paths import Paths
from tunelab.registry import Registry


def _always(strategy: str, cuda: bool) -> Optional[str]:
    return None


def _no_options(settings: QuantizeConfig, paths: Paths) -> dict:
    return {}


@dataclass(frozen=True)
class DeployMethod:
    name: str
    make: Callable[[Path, Path, dict], None]
    """(merged model folder, target folder, recipe) -> the variant's model/ folder written."""
    loader: str
    """How a fresh process loads it: a key of tunelab.models.loading.LOADERS (written to its recipe)."""
    unavailable: Callable[[str, bool], Optional[str]] = _always
    """(trained strategy, cuda present) -> why it does not apply here, or None."""
    options: Callable[[QuantizeConfig, Paths], dict] = _no_options
    """(conf/quantize, the pipeline's paths) -> the settings and inputs it reads, as entries of its recipe
    (so they are recorded beside it)."""

    def __post_init__(self):
        if self.loader not in LOADERS:
            raise ValueError(f"deployment method {self.name}: loader {self.loader!r} is not one of {list(LOADERS)}")


METHODS: Registry[DeployMethod] = Registry("quantize.variants")


def copy_merged(merged_dir: Path, target: Path, recipe: dict) -> None:
    shutil.copytree(merged_dir, target)


def cast(dtype: str) -> Callable:
    def make(merged_dir: Path, target: Path, recipe: dict) -> None:
        float_model(merged_dir, dtype).save_pretrained(target)

    return make


def needs_cuda(method: str) -> Callable:
    def unavailable(strategy: str, cuda: bool) -> Optional[str]:
        if not cuda:
            return f"{method} is made on a CUDA GPU only: this CPU has no fast {method} matmul, so it would be slower than fp32"
        return None

    return unavailable


def make_int8_dynamic(merged_dir: Path, target: Path, recipe: dict) -> None:
    import torch

    model = float_model(merged_dir)
    model.config.save_pretrained(target)
    model.generation_config.save_pretrained(target)
    torch.save(int8_dynamic(model, recipe["keep_float"]).state_dict(), target / INT8_DYNAMIC_WEIGHTS)


def quantization_config(method: str):
    import torch
    from transformers import BitsAndBytesConfig, TorchAoConfig

    if method == "nf4":
        compute = torch.bfloat16 if torch.cuda.is_available() else torch.float32
        return BitsAndBytesConfig(load_in_4bit=True, bnb_4bit_quant_type="nf4", bnb_4bit_compute_dtype=compute)
    if method == "int8":
        return BitsAndBytesConfig(load_in_8bit=True)
    from torchao.quantization import Int8WeightOnlyConfig

    return TorchAoConfig(Int8WeightOnlyConfig())


def quantize_weights(merged_dir: Path, target: Path, recipe: dict) -> None:
    quantized_model(merged_dir, quantization_config(recipe["method"])).save_pretrained(target)


def needs_bitsandbytes(method: str) -> Callable:
    def unavailable(strategy: str, cuda: bool) -> Optional[str]:
        if importlib.util.find_spec("bitsandbytes") is None:
            return f"{method} needs bitsandbytes, which is not installed"
        return None

    return unavailable


def keep_float(settings: QuantizeConfig, paths: Paths) -> dict:
    return {"keep_float": list(settings.int8_dynamic_keep_float)}


def wanda_options(sparsity: Optional[float] = None) -> Callable[[QuantizeConfig, Paths], dict]:
    """quantize.wanda_sparsity (or a fixed one: 2:4 is 50%) and its calibration rows: the formatted train split."""

    def options(settings: QuantizeConfig, paths: Paths) -> dict:
        return {"sparsity": sparsity if sparsity is not None else settings.wanda_sparsity,
                "calibration": {"file": str(paths.split(paths.formatted, "train")),
                                "rows": settings.wanda_calibration_rows}}

    return options


def calibrated_on_merged(strategy: str, cuda: bool) -> Optional[str]:
    if strategy in ("prompt_tuning", "prefix_tuning"):
        return (f"Wanda calibrates on the merged model's activations, and {strategy}'s virtual tokens cannot be "
                "merged into it")
    return None


def not_after_prompt_learning(strategy: str, cuda: bool) -> Optional[str]:
    if strategy in ("prompt_tuning", "prefix_tuning"):
        return (f"a GGUF file holds one model, and {strategy}'s virtual tokens cannot be merged into it: "
                "llama.cpp would run the base alone")
    return None


def only_after_qat(strategy: str, cuda: bool) -> Optional[str]:
    if strategy != "qat":
        return f"qat converts QAT-trained weights: it applies to strategy=qat, this model was trained with {strategy}"
    return None


METHODS.register(DeployMethod("merged", copy_merged, "float"))
METHODS.register(DeployMethod("int8_dynamic", make_int8_dynamic, "int8_dynamic", options=keep_float))
METHODS.register(DeployMethod("nf4", quantize_weights, "quantized", needs_bitsandbytes("nf4")))
METHODS.register(DeployMethod("int8", quantize_weights, "quantized", needs_bitsandbytes("int8")))
METHODS.register(DeployMethod("int8_weight_only", quantize_weights, "quantized"))
# torchao's converted tensors do not serialise to safetensors: the trained weights convert on load
METHODS.register(DeployMethod("qat", copy_merged, "qat", only_after_qat))
METHODS.register(DeployMethod("bf16", cast("bfloat16"), "cast", needs_cuda("bf16")))
METHODS.register(DeployMethod("fp16", cast("float16"), "cast", needs_cuda("fp16")))
METHODS.register(DeployMethod("gguf_q8_0", gguf_export("q8_0"), "gguf", not_after_prompt_learning))
METHODS.register(DeployMethod("gguf_f16", gguf_export("f16"), "gguf", not_after_prompt_learning))
METHODS.register(DeployMethod("wanda", wanda_export(None), "float", calibrated_on_merged, options=wanda_options()))
METHODS.register(DeployMethod("wanda_2_4", wanda_export(SEMI_STRUCTURED_BLOCK), "float", calibrated_on_merged,
                              options=wanda_options(0.5)))


def unavailable_reason(method: str, strategy: str, cuda: bool) -> Optional[str]:
    """Why a variant does not apply here, or None when it does."""
    return METHODS[method].unavailable(strategy, cuda)


def make_variant(method: str, merged_dir: Path, source_dir: Path, folder: Path, tokenizer,
                 settings: QuantizeConfig, paths: Paths) -> None:
    """Write one variant into ``folder`` (model/, adapter/ for prompt learning, the recipe), from the
    model in ``source_dir`` (trained or aligned) merged into ``merged_dir``; what it calibrates on is
    read under ``paths``."""
    deploy = METHODS[method]
    trained = trained_recipe(source_dir)
    recipe = {"method": method, "loader": deploy.loader, "strategy": trained["strategy"],
              **({"qat": trained["qat"]} if "qat" in trained else {}), **deploy.options(settings, paths),
              **({"gguf_file": GGUF_FILE} if deploy.loader == "gguf" else {})}
    deploy.make(merged_dir, folder / "model", recipe)
    tokenizer.save_pretrained(folder / "model")
    if trained["prompt_learning"]:
        shutil.copytree(source_dir, folder / "adapter", ignore=shutil.ignore_patterns("tokenizer*", "*.jinja"))
    (folder / DEPLOY_FILE).write_text(json.dumps(recipe, indent=2) + "\n")
