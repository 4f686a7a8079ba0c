"""Each strategy as the model it trains: which parameters learn, and how the result is stored.

| strategy      | trainable                                  | artifact in models/trained        |
|---------------|--------------------------------------------|-----------------------------------|
| full          | every parameter                            | full safetensors                  |
| lora          | r·(in+out) per targeted linear layer       | PEFT adapter                      |
| qlora         | LoRA's, on a frozen bitsandbytes 4-bit base| PEFT adapter (+ the 4-bit recipe) |
| prompt_tuning | virtual tokens × hidden size               | PEFT adapter                      |
| prefix_tuning | virtual tokens × layers × 2 × kv width     | PEFT adapter                      |
| ia3           | one scale per channel of targeted layers   | PEFT adapter                      |
| qat           | every parameter, under fake quantization   | trained weights + torchao scheme  |
"""

import json
from pathlib import Path

import torch

from tunelab.config.schema import QATOptions, QuantizationOptions, StrategyConfig
from tunelab.errors import TunelabError

STRATEGY_FILE = "tunelab_strategy.json"


def linear_layer_names(model) -> list[str]:
    """The last name part of every linear layer (q_proj, down_proj, ...), which PEFT targets."""
    return sorted({name.rsplit(".", 1)[-1] for name, module in model.named_modules() if isinstance(module, torch.nn.Linear)})


def check_targets(model, targets: list[str], key: str) -> None:
    """PEFT's own error comes late and vague; name the missing targets and the real choices."""
    available = linear_layer_names(model)
    missing = [name for name in targets if name not in available]
    if missing:
        raise TunelabError(f"{key}: {missing} match no linear layer of the base model; it has {available}")


def load_base(base_dir: Path, quantization: QuantizationOptions | None = None):
    """The base model in float32, or with bitsandbytes 4-bit weights (QLoRA's ``quantization``)."""
    from transformers import AutoModelForCausalLM, BitsAndBytesConfig

    if not (base_dir / "config.json").is_file():
        raise TunelabError(f"{base_dir}: no model found; run the base stage first")
    if quantization is None:
        return AutoModelForCausalLM.from_pretrained(base_dir, dtype=torch.float32)
    recipe = BitsAndBytesConfig(
        load_in_4bit=True,
        bnb_4bit_quant_type=quantization.quant_type,
        bnb_4bit_use_double_quant=quantization.double_quant,
        bnb_4bit_compute_dtype=torch.bfloat16 if torch.cuda.is_available() else torch.float32,
    )
    device = "cuda" if torch.cuda.is_available() else "cpu"
    return AutoModelForCausalLM.from_pretrained(base_dir, quantization_config=recipe, device_map={"": device})


def peft_config(strategy: StrategyConfig, base_dir: Path):
    from peft import IA3Config, LoraConfig, PrefixTuningConfig, PromptTuningConfig, PromptTuningInit, TaskType

    if strategy.name in ("lora", "qlora"):
        lora = strategy.lora
        return LoraConfig(task_type=TaskType.CAUSAL_LM, r=lora.r, lora_alpha=lora.alpha, lora_dropout=lora.dropout,
                          target_modules=list(lora.target_modules))
    if strategy.name == "ia3":
        return IA3Config(task_type=TaskType.CAUSAL_LM, target_modules=list(strategy.ia3.target_modules),
                         feedforward_modules=list(strategy.ia3.feedforward_modules))
    if strategy.name == "prompt_tuning":
        options = strategy.prompt_tuning
        from_text = options.init_text is not None
        return PromptTuningConfig(
            task_type=TaskType.CAUSAL_LM, num_virtual_tokens=options.num_virtual_tokens,
            prompt_tuning_init=PromptTuningInit.TEXT if from_text else PromptTuningInit.RANDOM,
            prompt_tuning_init_text=options.init_text, tokenizer_name_or_path=str(base_dir) if from_text else None)
    return PrefixTuningConfig(task_type=TaskType.CAUSAL_LM, num_virtual_tokens=strategy.prefix_tuning.num_virtual_tokens,
                              prefix_projection=strategy.prefix_tuning.projection)


def check_strategy_targets(model, strategy: StrategyConfig) -> None:
    if strategy.lora is not None:
        check_targets(model, strategy.lora.target_modules, "strategy.lora.target_modules")
    if strategy.ia3 is not None:
        check_targets(model, strategy.ia3.target_modules, "strategy.ia3.target_modules")
        outside = sorted(set(strategy.ia3.feedforward_modules) - set(strategy.ia3.target_modules))
        if outside:
            raise TunelabError(f"strategy.ia3.feedforward_modules: {outside} must also be in strategy.ia3.target_modules")


# --- quantization-aware training -------------------------------------------------------------


def qat_base_config(options: QATOptions):
    """The post-training quantization that QAT simulates while training and applies at convert."""
    from torchao.quantization import Int4WeightOnlyConfig, Int8DynamicActivationIntxWeightConfig, PerGroup

    if options.scheme == "int4_weight_only":
        if not torch.cuda.is_available():
            raise TunelabError("strategy.qat.scheme: int4_weight_only needs a CUDA GPU; "
                               "use int8_dynamic_activation_int4_weight on CPU")
        return Int4WeightOnlyConfig(group_size=options.group_size)
    return Int8DynamicActivationIntxWeightConfig(weight_dtype=torch.int4, weight_granularity=PerGroup(options.group_size))


def _not_lm_head(module, name: str) -> bool:
    # lm_head shares its weight with the embeddings in tied models; quantizing it breaks the tie.
    return isinstance(module, torch.nn.Linear) and name != "lm_head"


def qat_prepare(model, options: QATOptions) -> None:
    from torchao.quantization import quantize_
    from torchao.quantization.qat import QATConfig

    quantize_(model, QATConfig(qat_base_config(options), step="prepare"), filter_fn=_not_lm_head)


def qat_remove_fake_quantizers(model) -> None:
    """Back to plain linear layers holding the QAT-trained float weights."""
    from torchao.quantization import quantize_
    from torchao.quantization.qat import QATConfig

    quantize_(model, QATConfig(step="convert"), filter_fn=_not_lm_head)


def qat_convert(model, options: QATOptions) -> None:
    """Apply the real quantization: what QATConfig(step='convert') does to trained float weights."""
    from torchao.quantization import quantize_

    quantize_(model, qat_base_config(options), filter_fn=_not_lm_head)


# --- building and storing --------------------------------------------------------------------


def trainable_model(base_dir: Path, strategy: StrategyConfig, gradient_checkpointing: bool):
    """The model as the trainer sees it, with exactly the strategy's parameters trainable."""
    model = load_base(base_dir, strategy.quantization)
    check_strategy_targets(model, strategy)
    if strategy.name == "full":
        return model
    if strategy.name == "qat":
        qat_prepare(model, strategy.qat)
        return model
    from peft import get_peft_model, prepare_model_for_kbit_training

    if strategy.name == "qlora":
        model = prepare_model_for_kbit_training(model, use_gradient_checkpointing=gradient_checkpointing)
    return get_peft_model(model, peft_config(strategy, base_dir))


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


def save_trained(model, tokenizer, strategy: StrategyConfig, folder: Path) -> None:
    """safetensors only: the adapter for PEFT strategies, the full weights otherwise."""
    if strategy.name == "qat":
        qat_remove_fake_quantizers(model)
    model.save_pretrained(folder, safe_serialization=True)
    sort_adapter_module_lists(folder / ADAPTER_CONFIG)
    tokenizer.save_pretrained(folder)
    recipe = {"strategy": strategy.name}
    if strategy.qat is not None:
        recipe["qat"] = {"scheme": strategy.qat.scheme, "group_size": strategy.qat.group_size}
    if strategy.quantization is not None:
        recipe["quantization"] = {"quant_type": strategy.quantization.quant_type,
                                  "double_quant": strategy.quantization.double_quant}
    (folder / STRATEGY_FILE).write_text(json.dumps(recipe, indent=2) + "\n")


def trained_recipe(trained_dir: Path) -> dict:
    """What save_trained recorded: the strategy, and its QAT scheme or 4-bit recipe."""
    recipe_file = trained_dir / STRATEGY_FILE
    if not recipe_file.is_file():
        raise TunelabError(f"{trained_dir}: no {STRATEGY_FILE}; run the train stage first")
    return json.loads(recipe_file.read_text())


def load_trained(trained_dir: Path, base_dir: Path):
    """The model a later stage evaluates: adapter on base, full weights, or QAT converted."""
    from transformers import AutoModelForCausalLM

    recipe = trained_recipe(trained_dir)
    name = recipe["strategy"]
    if name == "full":
        return AutoModelForCausalLM.from_pretrained(trained_dir, dtype=torch.float32)
    if name == "qat":
        model = AutoModelForCausalLM.from_pretrained(trained_dir, dtype=torch.float32)
        qat_convert(model, QATOptions(**recipe["qat"]))
        return model
    from peft import PeftModel

    quantization = QuantizationOptions(**recipe["quantization"]) if "quantization" in recipe else None
    return PeftModel.from_pretrained(load_base(base_dir, quantization), trained_dir)
