"""The model variants the evaluate and benchmark stages measure, each loaded as it would be deployed.

| variant        | folder                | what it is                                             |
|----------------|-----------------------|--------------------------------------------------------|
| base           | models/base           | the base model, no adaptation: the prompting baselines |
| trained        | models/trained        | the train stage's result (adapter on base, or weights) |
| any other name | models/deploy/<name>  | a quantize-stage variant (merged, int8_dynamic, nf4...) |
"""

import json
from pathlib import Path

import torch

from tunelab.deploy.variants import load_deployed
from tunelab.errors import TunelabError
from tunelab.training.strategies import load_base, load_trained

BASE = Path("models/base")
TRAINED = Path("models/trained")
DEPLOY = Path("models/deploy")
QUANTIZE_REPORT = Path("metrics/quantize.json")


def skipped_reason(name: str) -> str | None:
    """Why the quantize stage did not make this variant, if it skipped it."""
    if name in ("base", "trained") or not QUANTIZE_REPORT.is_file():
        return None
    entry = json.loads(QUANTIZE_REPORT.read_text())["variants"].get(name, {})
    return entry.get("reason") if entry.get("status") == "skipped" else None


def variant_folder(name: str) -> Path:
    return {"base": BASE, "trained": TRAINED}.get(name, DEPLOY / name)


def load_variant(name: str):
    """The variant's model in eval mode, on the GPU where there is one."""
    if (DEPLOY / name).is_dir() and name not in ("base", "trained"):
        return load_deployed(DEPLOY / name)  # on the device its kernels run on
    if name == "base":
        model = load_base(BASE)
    elif name == "trained":
        model = load_trained(TRAINED, BASE)
    else:
        raise TunelabError(f"unknown model variant {name!r}: not base, trained, or a folder in {DEPLOY}/ "
                           "(the quantize stage makes those)")
    if torch.cuda.is_available() and not getattr(model, "is_loaded_in_4bit", False):
        model = model.to("cuda")
    return model.eval()


def continues_a_cache(model) -> bool:
    """PEFT prompt learning (prompt/prefix tuning) prepends its own tokens or cache, so a shared
    prefix cache cannot be passed in; every other variant can reuse one."""
    config = getattr(model, "active_peft_config", None)
    return not (config is not None and config.is_prompt_learning)
