"""Deployable forms of the trained model: merge the adapter, then quantize or cast.

| variant           | how it is made                                          | on disk                          |
|-------------------|---------------------------------------------------------|----------------------------------|
| merged            | adapter merged into the base (LoRA, IA3, QLoRA), fp32   | safetensors                      |
| int8_dynamic      | torch.ao dynamic int8 of every Linear (CPU kernels)     | int8 state dict (torch.save)     |
| nf4, int8         | bitsandbytes 4-bit NF4 / LLM.int8 weights               | safetensors + quantization_config|
| int8_weight_only  | torchao Int8WeightOnlyConfig through TorchAoConfig       | safetensors + quantization_config|
| qat               | strategy=qat only: the QAT-trained weights, converted   | fp32 weights + scheme; converted on load |
| bf16, fp16        | casts, made on a CUDA GPU only                          | safetensors                      |

PEFT prompt/prefix tuning cannot be merged: their variants quantize the base and keep the
adapter beside it (``adapter/``), applied on load. Each folder has ``tunelab_deploy.json``
saying how to load it, so every variant reloads from disk in a fresh process.
"""

import importlib.util
import json
import shutil
from pathlib import Path

import torch

from tunelab.config.schema import QATOptions
from tunelab.errors import TunelabError
from tunelab.training.strategies import load_base, qat_convert, trained_recipe

DEPLOY_FILE = "tunelab_deploy.json"
PROMPT_LEARNING = ("prompt_tuning", "prefix_tuning")
INT8_DYNAMIC_WEIGHTS = "int8_dynamic.pt"


def skip_reason(method: str, strategy: str, cuda: bool) -> str | None:
    """Why a variant does not apply here, or None when it does."""
    if method in ("nf4", "int8") and importlib.util.find_spec("bitsandbytes") is None:
        return f"{method} needs bitsandbytes, which is not installed"
    if method in ("bf16", "fp16") and not cuda:
        return f"{method} is made on a CUDA GPU only: this CPU has no fast {method} matmul, so it would be slower than fp32"
    if method == "qat" and strategy != "qat":
        return f"qat converts QAT-trained weights: it applies to strategy=qat, this model was trained with {strategy}"
    return None


def merged_model(trained_dir: Path, base_dir: Path):
    """The float32 model to quantize: the adapter merged where it can be, else the base (prompt learning)."""
    from transformers import AutoModelForCausalLM

    strategy = trained_recipe(trained_dir)["strategy"]
    if strategy in PROMPT_LEARNING:
        return load_base(base_dir)
    if strategy in ("full", "qat"):  # qat: the QAT-trained float weights; only the qat variant converts them
        return AutoModelForCausalLM.from_pretrained(trained_dir, dtype=torch.float32)
    from peft import PeftModel

    # QLoRA's adapter too goes onto the float base: its 4-bit base is this one, quantized
    return PeftModel.from_pretrained(load_base(base_dir), trained_dir).merge_and_unload()


def int8_dynamic(model, keep_float: list[str], inplace: bool = False):
    """torch.ao dynamic quantization: int8 Linear weights, activations quantized per batch, except
    the Linear layers named in ``keep_float`` (the last part of their name, e.g. down_proj)."""
    import warnings

    from torch.ao.quantization import default_dynamic_qconfig

    spec = {name: default_dynamic_qconfig for name, module in model.named_modules()
            if isinstance(module, torch.nn.Linear) and name.rsplit(".", 1)[-1] not in keep_float}
    with warnings.catch_warnings():  # torch.ao.quantization's deprecation notice; the CPU kernels are what we want
        warnings.simplefilter("ignore")
        return torch.ao.quantization.quantize_dynamic(model, spec, dtype=torch.qint8, inplace=inplace)


def quantization_config(method: str):
    from transformers import BitsAndBytesConfig, TorchAoConfig

    if method == "nf4":
        compute = torch.bfloat16 if torch.cuda.is_available() else torch.float32
        return BitsAndBytesConfig(load_in_4bit=True, bnb_4bit_quant_type="nf4", bnb_4bit_compute_dtype=compute)
    if method == "int8":
        return BitsAndBytesConfig(load_in_8bit=True)
    from torchao.quantization import Int8WeightOnlyConfig

    return TorchAoConfig(Int8WeightOnlyConfig())


def device_map() -> dict:
    return {"": "cuda" if torch.cuda.is_available() else "cpu"}


def make_variant(method: str, merged_dir: Path, trained_dir: Path, folder: Path, tokenizer,
                 keep_float: list[str] = ()) -> None:
    """Write one variant into ``folder`` (model/, adapter/ for prompt learning, the recipe)."""
    from transformers import AutoModelForCausalLM

    recipe = trained_recipe(trained_dir)
    target = folder / "model"
    if method == "merged":
        shutil.copytree(merged_dir, target)
    elif method == "int8_dynamic":
        model = AutoModelForCausalLM.from_pretrained(merged_dir, dtype=torch.float32)
        model.config.save_pretrained(target)
        model.generation_config.save_pretrained(target)
        torch.save(int8_dynamic(model, list(keep_float)).state_dict(), target / INT8_DYNAMIC_WEIGHTS)
    elif method in ("nf4", "int8", "int8_weight_only"):
        model = AutoModelForCausalLM.from_pretrained(merged_dir, quantization_config=quantization_config(method),
                                                     device_map=device_map())
        model.save_pretrained(target)
    elif method == "qat":  # torchao's converted tensors do not serialise to safetensors: convert on load
        shutil.copytree(merged_dir, target)
    else:  # bf16 / fp16 casts
        dtype = torch.bfloat16 if method == "bf16" else torch.float16
        AutoModelForCausalLM.from_pretrained(merged_dir, dtype=dtype).save_pretrained(target)
    tokenizer.save_pretrained(target)
    if recipe["strategy"] in PROMPT_LEARNING:
        shutil.copytree(trained_dir, folder / "adapter", ignore=shutil.ignore_patterns("tokenizer*", "*.jinja"))
    deploy = {"method": method, "strategy": recipe["strategy"], **({"qat": recipe["qat"]} if "qat" in recipe else {}),
              **({"keep_float": list(keep_float)} if method == "int8_dynamic" else {})}
    (folder / DEPLOY_FILE).write_text(json.dumps(deploy, indent=2) + "\n")


def load_deployed(folder: Path):
    """A variant as a fresh process loads it from disk, on the device its kernels run on
    (int8_dynamic's are CPU kernels; the others go to the GPU where there is one)."""
    from transformers import AutoModelForCausalLM

    recipe_file = folder / DEPLOY_FILE
    if not recipe_file.is_file():
        raise TunelabError(f"{folder}: no {DEPLOY_FILE}; run the quantize stage first")
    recipe = json.loads(recipe_file.read_text())
    method, target = recipe["method"], folder / "model"
    if method == "int8_dynamic":
        return _load_int8_dynamic(folder, recipe["keep_float"]).eval()
    if method in ("nf4", "int8", "int8_weight_only"):
        model = AutoModelForCausalLM.from_pretrained(target, device_map=device_map())
    else:
        model = AutoModelForCausalLM.from_pretrained(target, dtype="auto" if method in ("bf16", "fp16") else torch.float32)
        if method == "qat":
            qat_convert(model, QATOptions(**recipe["qat"]))
        if torch.cuda.is_available():
            model = model.to("cuda")
    return _with_adapter(model, folder).eval()


def _with_adapter(model, folder: Path):
    """Prompt/prefix tuning's adapter on top of the deployed base, where the variant keeps one."""
    if not (folder / "adapter").is_dir():
        return model
    from peft import PeftModel

    return PeftModel.from_pretrained(model, folder / "adapter")


def _load_int8_dynamic(folder: Path, keep_float: list[str]):
    """Quantized modules cannot be filled by PEFT's adapter loading (it loads the whole model's state
    non-strictly, and a quantized Linear insists on its scale), so the adapter goes on the float
    skeleton first and the base is quantized in place under it before its int8 weights load."""
    from transformers import AutoConfig, AutoModelForCausalLM

    target = folder / "model"
    skeleton = AutoModelForCausalLM.from_config(AutoConfig.from_pretrained(target), dtype=torch.float32)
    model = _with_adapter(skeleton, folder)
    int8_dynamic(skeleton, keep_float, inplace=True)
    skeleton.load_state_dict(torch.load(target / INT8_DYNAMIC_WEIGHTS, weights_only=True))
    return model
