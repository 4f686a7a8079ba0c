"""The fine-tuning strategies, one registry entry each: which parameters learn, and how the result is stored.

| strategy      | trainable                                  | artifact in models/trained        |
|---------------|--------------------------------------------|-----------------------------------|
| full          | every parameter                            | full safetensors                  |
| lora          | r·(in+out) per targeted linear layer       | PEFT adapter                      |
| qlora         | LoRA's, on a frozen bitsandbytes 4-bit base| PEFT adapter (+ the 4-bit recipe) |
| prompt_tuning | virtual tokens × hidden size               | PEFT adapter                      |
| prefix_tuning | virtual tokens × layers × 2 × kv width     | PEFT adapter                      |
| ia3           | one scale per channel of targeted layers   | PEFT adapter                      |
| qat           | every parameter, under fake quantization   | trained weights + torchao scheme  |

A new strategy is one ``STRATEGIES.register(Strategy(...))`` here plus its conf/strategy file;
an options section of its own is a dataclass in tunelab.config.schema.
"""

import json
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Callable

from tunelab.errors import TunelabError
from tunelab.models.loading import STRATEGY_FILE
from tunelab.models.qat import not_lm_head, qat_base_config, qat_remove_fake_quantizers
from tunelab.registry import Registry

if TYPE_CHECKING:
    from tunelab.config.schema import LoraOptions, StrategyConfig, TrainConfig


def _nothing(*_) -> None:
    return None


@dataclass(frozen=True)
class Strategy:
    name: str
    sections: tuple[str, ...]
    """The option sections of ``strategy.*`` it reads (any other one set is refused)."""
    adapt: Callable
    """(model, config, base_dir, gradient_checkpointing) -> the model with exactly the strategy's parameters trainable."""
    saves_adapter: bool
    """True: models/trained is a PEFT adapter applied to models/base; False: full weights."""
    prompt_learning: bool = False
    """Its adapter prepends virtual tokens or a cache: it cannot be merged, nor continue a shared cache."""
    check: Callable = _nothing
    """(model, config): refuse options that do not fit the base model, before training."""
    check_training: Callable = _nothing
    """(train config): refuse training settings the strategy cannot run with."""
    before_save: Callable = _nothing
    """(model): make the trained model plain before it is saved."""
    recipe: Callable[["StrategyConfig"], dict] = lambda config: {}
    """What loading needs beyond the weights (tunelab.models.loading reads it): the 4-bit base
    recipe, the QAT scheme to convert with."""


STRATEGIES: Registry[Strategy] = Registry("strategy.name")


# --- PEFT ------------------------------------------------------------------------------------


def linear_layer_names(model) -> list[str]:
    """The last name part of every linear layer (q_proj, down_proj, ...), which PEFT targets."""
    import torch

    return sorted({name.rsplit(".", 1)[-1] for name, module in model.named_modules() if isinstance(module, torch.nn.Linear)})


def check_targets(model, targets: list[str], key: str) -> None:
    """PEFT's own error comes late and vague; name the missing targets and the real choices."""
    available = linear_layer_names(model)
    missing = [name for name in targets if name not in available]
    if missing:
        raise TunelabError(f"{key}: {missing} match no linear layer of the base model; it has {available}")


def peft_model(peft_config: Callable) -> Callable:
    """An ``adapt`` that wraps the base in a PEFT model made from ``peft_config(config, base_dir)``."""

    def adapt(model, config: "StrategyConfig", base_dir: Path, gradient_checkpointing: bool):
        from peft import get_peft_model

        return get_peft_model(model, peft_config(config, base_dir))

    return adapt


ALL_LINEAR = "all-linear"


def lora_arguments(lora: "LoraOptions") -> dict:
    """What tunelab sets of peft's LoraConfig; ``lora.peft`` adds any other of its fields."""
    from peft import TaskType

    targets = ALL_LINEAR if list(lora.target_modules) == [ALL_LINEAR] else list(lora.target_modules)
    return {"task_type": TaskType.CAUSAL_LM, "r": lora.r, "lora_alpha": lora.alpha, "lora_dropout": lora.dropout,
            "target_modules": targets}


def lora_options_config(lora: "LoraOptions"):
    """The LoRA adapter of a strategy (lora, qlora) or of the alignment phase."""
    from peft import LoraConfig

    return LoraConfig(**lora_arguments(lora), **lora.peft)


def lora_config(config: "StrategyConfig", base_dir: Path):
    return lora_options_config(config.lora)


BASE_RESHAPING_INITS = ("pissa", "olora")
"""init_lora_weights values that move part of each base weight into the adapter (W = W_res + BA)."""


def reshapes_base(config: "StrategyConfig") -> bool:
    init = config.lora.peft.get("init_lora_weights") if config.lora is not None else None
    return isinstance(init, str) and init.startswith(BASE_RESHAPING_INITS)


def save_initial_adapter(model, config: "StrategyConfig", folder: Path) -> Path | None:
    """PiSSA and OLoRA train on a base they changed, but models/trained must apply to models/base
    as it is, like every other adapter: peft converts the trained adapter against the initial one
    when it is saved (``path_initial_model_for_weight_conversion``), which needs the initial one on
    disk. It is saved once per checkpoint folder: a resumed run computes the same initialisation."""
    if not reshapes_base(config):
        return None
    if not (folder / ADAPTER_CONFIG).is_file():
        adapter = model.peft_config["default"]
        init, adapter.init_lora_weights = adapter.init_lora_weights, True  # loading it must not initialise again
        model.save_pretrained(folder, safe_serialization=True)
        adapter.init_lora_weights = init
    return folder


def check_lora(model, config: "StrategyConfig") -> None:
    if list(config.lora.target_modules) != [ALL_LINEAR]:
        check_targets(model, config.lora.target_modules, "strategy.lora.target_modules")


def adapt_qlora(model, config: "StrategyConfig", base_dir: Path, gradient_checkpointing: bool):
    from bitsandbytes.nn import Linear4bit
    from peft import get_peft_model, prepare_model_for_kbit_training

    # On CPUs with AVX-512 BF16, a 4-bit layer's first no-grad forward (the evaluation before
    # training) repacks its weights for an inference kernel that has no backward, and they stay
    # repacked: training then silently loses the gradient through every frozen layer. A model
    # that trains keeps bitsandbytes' trainable layout (its own switch, set per layer).
    for layer in model.modules():
        if isinstance(layer, Linear4bit):
            layer.support_avx512bf16_for_cpu = False
    model = prepare_model_for_kbit_training(model, use_gradient_checkpointing=gradient_checkpointing)
    return get_peft_model(model, lora_config(config, base_dir))


def ia3_config(config: "StrategyConfig", base_dir: Path):
    from peft import IA3Config, TaskType

    return IA3Config(task_type=TaskType.CAUSAL_LM, target_modules=list(config.ia3.target_modules),
                     feedforward_modules=list(config.ia3.feedforward_modules), **config.ia3.peft)


def check_ia3(model, config: "StrategyConfig") -> None:
    check_targets(model, config.ia3.target_modules, "strategy.ia3.target_modules")
    outside = sorted(set(config.ia3.feedforward_modules) - set(config.ia3.target_modules))
    if outside:
        raise TunelabError(f"strategy.ia3.feedforward_modules: {outside} must also be in strategy.ia3.target_modules")


def prompt_tuning_config(config: "StrategyConfig", base_dir: Path):
    from peft import PromptTuningConfig, PromptTuningInit, TaskType

    options = config.prompt_tuning
    from_text = options.init_text is not None
    return PromptTuningConfig(
        task_type=TaskType.CAUSAL_LM, num_virtual_tokens=options.num_virtual_tokens,
        prompt_tuning_init=PromptTuningInit.TEXT if from_text else PromptTuningInit.RANDOM,
        prompt_tuning_init_text=options.init_text, tokenizer_name_or_path=str(base_dir) if from_text else None,
        **options.peft)


def prefix_tuning_config(config: "StrategyConfig", base_dir: Path):
    from peft import PrefixTuningConfig, TaskType

    return PrefixTuningConfig(task_type=TaskType.CAUSAL_LM, num_virtual_tokens=config.prefix_tuning.num_virtual_tokens,
                              prefix_projection=config.prefix_tuning.projection, **config.prefix_tuning.peft)


def no_gradient_checkpointing(train: "TrainConfig") -> None:
    if train.gradient_checkpointing:
        raise TunelabError("train.gradient_checkpointing: prefix tuning's cached prefixes do not support it; set it false")


def quantized_base_recipe(config: "StrategyConfig") -> dict:
    return {"quantization": {"quant_type": config.quantization.quant_type,
                             "double_quant": config.quantization.double_quant}}


# --- quantization-aware training -------------------------------------------------------------


def qat_prepare(model, config: "StrategyConfig", base_dir: Path, gradient_checkpointing: bool):
    from torchao.quantization import quantize_
    from torchao.quantization.qat import QATConfig

    quantize_(model, QATConfig(qat_base_config(config.qat), step="prepare"), filter_fn=not_lm_head)
    return model


def qat_recipe(config: "StrategyConfig") -> dict:
    return {"qat": {"scheme": config.qat.scheme, "group_size": config.qat.group_size}}


# --- the registry ----------------------------------------------------------------------------

STRATEGIES.register(Strategy("full", (), adapt=lambda model, *_: model, saves_adapter=False))
STRATEGIES.register(Strategy("lora", ("lora",), adapt=peft_model(lora_config), saves_adapter=True, check=check_lora))
STRATEGIES.register(Strategy("qlora", ("lora", "quantization"), adapt=adapt_qlora, saves_adapter=True, check=check_lora,
                             recipe=quantized_base_recipe))
STRATEGIES.register(Strategy("prompt_tuning", ("prompt_tuning",), adapt=peft_model(prompt_tuning_config),
                             saves_adapter=True, prompt_learning=True))
STRATEGIES.register(Strategy("prefix_tuning", ("prefix_tuning",), adapt=peft_model(prefix_tuning_config),
                             saves_adapter=True, prompt_learning=True, check_training=no_gradient_checkpointing))
STRATEGIES.register(Strategy("ia3", ("ia3",), adapt=peft_model(ia3_config), saves_adapter=True, check=check_ia3))
STRATEGIES.register(Strategy("qat", ("qat",), adapt=qat_prepare, saves_adapter=False,
                             before_save=qat_remove_fake_quantizers, recipe=qat_recipe))


def check_strategy_config(config: "StrategyConfig") -> Strategy:
    """The registered strategy, with exactly the option sections it reads set."""
    strategy = STRATEGIES[config.name]
    for section, value in config.option_sections().items():
        if value is not None and section not in strategy.sections:
            raise TunelabError(f"config key strategy.{section}: does not apply to strategy={config.name} "
                               f"(it reads: {list(strategy.sections) or 'no options'})")
        if value is None and section in strategy.sections:
            raise TunelabError(f"config key strategy.{section}: must be set for strategy={config.name}")
        if getattr(value, "peft", None):
            check_peft_options(f"strategy.{section}", value)
    return strategy


PEFT_CLASSES = {"LoraOptions": "LoraConfig", "IA3Options": "IA3Config", "PromptTuningOptions": "PromptTuningConfig",
                "PrefixTuningOptions": "PrefixTuningConfig"}
"""Each options section's peft config class, whose fields its ``peft`` dict may set."""
MANAGED_PEFT_FIELDS = {"LoraConfig": ("task_type", "r", "lora_alpha", "lora_dropout", "target_modules"),
                       "IA3Config": ("task_type", "target_modules", "feedforward_modules"),
                       "PromptTuningConfig": ("task_type", "num_virtual_tokens", "prompt_tuning_init",
                                              "prompt_tuning_init_text", "tokenizer_name_or_path"),
                       "PrefixTuningConfig": ("task_type", "num_virtual_tokens", "prefix_projection")}


def check_peft_options(key: str, options) -> None:
    """The section's ``peft`` names are fields of its peft class, and peft accepts their values
    (its own __post_init__ checks them: e.g. an unknown init_lora_weights)."""
    import peft

    from tunelab.config.passthrough import check_passthrough

    class_name = PEFT_CLASSES[type(options).__name__]
    check_passthrough(f"{key}.peft", options.peft, getattr(peft, class_name), MANAGED_PEFT_FIELDS[class_name],
                      instead=f" (from {key})")
    if class_name == "LoraConfig":
        try:
            lora_options_config(options)
        except (TypeError, ValueError) as error:
            raise TunelabError(f"config key {key}.peft: peft refuses it: {error}") from None


# --- building and storing --------------------------------------------------------------------


def trainable_model(base_dir: Path, config: "StrategyConfig", gradient_checkpointing: bool = False):
    """The model as the trainer sees it, with exactly the strategy's parameters trainable."""
    from tunelab.models.loading import load_base

    strategy = check_strategy_config(config)
    model = load_base(base_dir, config.quantization)
    strategy.check(model, config)
    return strategy.adapt(model, config, base_dir, gradient_checkpointing)


ADAPTER_CONFIG = "adapter_config.json"
MODULE_LISTS = ("target_modules", "feedforward_modules", "exclude_modules")


def sort_adapter_module_lists(config_file: Path) -> None:
    """PEFT writes its module sets in Python's per-process hash order, so the same training saved
    a different adapter_config.json each run; sorted, the trained artifact is bitwise the same."""
    if not config_file.is_file():  # full fine-tuning saves no adapter
        return
    config = json.loads(config_file.read_text())
    for key in MODULE_LISTS:
        if isinstance(config.get(key), list):
            config[key] = sorted(config[key])
    config_file.write_text(json.dumps(config, indent=2, sort_keys=True))


def with_kv_cache(model):
    """The model's config as inference wants it. The Trainer sets ``config.use_cache`` from its
    arguments (False: a training step caches nothing), and saved full weights would keep it: an
    int8_dynamic variant rebuilt from that config then took 3.0 s for 16 tokens of a SQuAD prompt
    (0.46 s with the cache) and answered nonsense."""
    if getattr(model, "config", None) is not None:
        model.config.use_cache = True
    return model


def save_trained(model, tokenizer, config: "StrategyConfig", folder: Path, initial_adapter: Path | None = None) -> None:
    """safetensors only: the adapter for PEFT strategies, the full weights otherwise. An adapter
    trained on a reshaped base (``initial_adapter``: PiSSA, OLoRA) is saved converted to one that
    applies to the unchanged base (of twice the rank)."""
    strategy = STRATEGIES[config.name]
    strategy.before_save(model)
    conversion = {"path_initial_model_for_weight_conversion": str(initial_adapter)} if initial_adapter else {}
    with_kv_cache(model).save_pretrained(folder, safe_serialization=True, **conversion)
    sort_adapter_module_lists(folder / ADAPTER_CONFIG)
    tokenizer.save_pretrained(folder)
    recipe = {"strategy": strategy.name, "adapter": strategy.saves_adapter, "prompt_learning": strategy.prompt_learning,
              **strategy.recipe(config)}
    (folder / STRATEGY_FILE).write_text(json.dumps(recipe, indent=2) + "\n")  # what tunelab.models.loading reads

