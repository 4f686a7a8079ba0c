"""The model variants the evaluate stage scores, each loaded the way it would be deployed.

| variant   | folder         | what it is                                             |
|-----------|----------------|--------------------------------------------------------|
| base      | models/base    | the base model, no adaptation: the prompting baselines |
| trained   | models/trained | the train stage's result (adapter on base, or weights) |
"""

from pathlib import Path

import torch

from tunelab.errors import TunelabError
from tunelab.training.strategies import load_base, load_trained

BASE = Path("models/base")
TRAINED = Path("models/trained")
VARIANTS = ("base", "trained")


def load_variant(name: str):
    """The variant's model in eval mode, on the GPU where there is one."""
    if name == "base":
        model = load_base(BASE)
    elif name == "trained":
        model = load_trained(TRAINED, BASE)
    else:
        raise TunelabError(f"unknown model variant {name!r}; expected one of {list(VARIANTS)}")
    if torch.cuda.is_available() and not getattr(model, "is_loaded_in_4bit", False):
        model = model.to("cuda")
    return model.eval()


def continues_a_cache(model) -> bool:
    """PEFT prompt learning (prompt/prefix tuning) prepends its own tokens or cache, so a shared
    prefix cache cannot be passed in; every other variant can reuse one."""
    config = getattr(model, "active_peft_config", None)
    return not (config is not None and config.is_prompt_learning)
