"""``strategy`` and ``train``: how the model is trained, each strategy's own options beside it."""

import dataclasses
from dataclasses import dataclass
from typing import Any, Optional

from tunelab.config.launchers import check_launcher
from tunelab.config.schema.checks import require_choice, require_range, require_set
from tunelab.errors import TunelabError


@dataclass(frozen=True)
class LoraOptions:
    """Low-rank adapters on the named linear layers (LoRA, and QLoRA's adapters)."""

    r: int
    """Rank of the update B·A; trainable parameters per layer: r × (in + out)."""
    alpha: int
    """Scale of the update is alpha / r."""
    dropout: float
    """Dropout on the adapter's input."""
    target_modules: list[str]
    """Names of the linear layers to adapt (the last part of the module name), or [all-linear]: every linear layer
    but the output layer (peft's own rule)."""
    peft: dict[str, Any]
    """Any other field of peft's LoraConfig by its own name (checked against peft's dataclass by the check stage),
    e.g. {use_dora: true}, {use_rslora: true}, {init_lora_weights: pissa}, {modules_to_save: [lm_head]}."""

    def __post_init__(self):
        require_range("strategy.lora.r", self.r, low=1)
        require_range("strategy.lora.alpha", self.alpha, low=0, low_open=True)
        require_range("strategy.lora.dropout", self.dropout, low=0, high=1, high_open=True)
        require_set("strategy.lora.target_modules", self.target_modules, "to name the layers to adapt")


@dataclass(frozen=True)
class QuantizationOptions:
    """QLoRA's frozen base: bitsandbytes 4-bit weights."""

    quant_type: str
    """nf4 (normal float, for normally distributed weights) or fp4."""
    double_quant: bool
    """Quantize the quantization constants too (saves ~0.4 bit per parameter)."""

    def __post_init__(self):
        require_choice("strategy.quantization.quant_type", self.quant_type, ("nf4", "fp4"))


@dataclass(frozen=True)
class PromptTuningOptions:
    """Soft prompt: trainable virtual-token embeddings before the input."""

    num_virtual_tokens: int
    """Length of the soft prompt; trainable parameters: this × hidden size."""
    peft: dict[str, Any]
    """Any other field of peft's PromptTuningConfig by its own name (checked against peft's dataclass by the check stage),
    e.g. {num_transformer_submodules: 1}."""
    init_text: Optional[str] = None
    """Initialise the soft prompt from this text's embeddings (null: random)."""

    def __post_init__(self):
        require_range("strategy.prompt_tuning.num_virtual_tokens", self.num_virtual_tokens, low=1)


@dataclass(frozen=True)
class PrefixTuningOptions:
    """Trainable key/value prefixes in every attention layer."""

    num_virtual_tokens: int
    """Prefix length."""
    projection: bool
    """Reparameterise the prefix through an MLP (more parameters, sometimes more stable)."""
    peft: dict[str, Any]
    """Any other field of peft's PrefixTuningConfig by its own name (checked against peft's dataclass by the check stage),
    e.g. {encoder_hidden_size: 256}."""

    def __post_init__(self):
        require_range("strategy.prefix_tuning.num_virtual_tokens", self.num_virtual_tokens, low=1)


@dataclass(frozen=True)
class IA3Options:
    """(IA)³: learned rescaling vectors on attention and feed-forward activations."""

    target_modules: list[str]
    """Layers whose activations are rescaled."""
    feedforward_modules: list[str]
    """Of those, the ones whose input (not output) is rescaled."""
    peft: dict[str, Any]
    """Any other field of peft's IA3Config by its own name (checked against peft's dataclass by the check stage),
    e.g. {init_ia3_weights: false}."""


QAT_SCHEMES = ("int8_dynamic_activation_int4_weight", "int4_weight_only")


@dataclass(frozen=True)
class QATOptions:
    """Quantization-aware training with torchao: fake-quantize while training, then convert."""

    scheme: str
    """int8_dynamic_activation_int4_weight (runs on CPU) or int4_weight_only (needs CUDA)."""
    group_size: int
    """Weights per quantization group."""

    def __post_init__(self):
        require_choice("strategy.qat.scheme", self.scheme, QAT_SCHEMES)
        require_range("strategy.qat.group_size", self.group_size, low=1)


@dataclass(frozen=True)
class StrategyConfig:
    """How the base model is adapted: which parameters train, and how they are stored."""

    name: str
    """A registered strategy (tunelab.training.strategies): full, lora, qlora, prompt_tuning, prefix_tuning, ia3, qat."""
    lora: Optional[LoraOptions] = None
    quantization: Optional[QuantizationOptions] = None
    prompt_tuning: Optional[PromptTuningOptions] = None
    prefix_tuning: Optional[PrefixTuningOptions] = None
    ia3: Optional[IA3Options] = None
    qat: Optional[QATOptions] = None

    def option_sections(self) -> dict[str, object]:
        """Every options section, set or not (the strategy registry says which it reads)."""
        return {f.name: getattr(self, f.name) for f in dataclasses.fields(self) if f.name != "name"}


PRECISIONS = ("auto", "fp32", "bf16", "fp16")
OPTIMIZERS = ("adamw_torch", "adamw_torch_fused", "sgd", "adafactor", "adamw_bnb_8bit", "paged_adamw_8bit")


@dataclass(frozen=True)
class TrainConfig:
    """Optimisation, evaluation and checkpointing of the ``train`` stage."""

    optimizer: str
    """A transformers optimizer name: adamw_torch, adamw_torch_fused, sgd, adafactor, adamw_bnb_8bit, paged_adamw_8bit."""
    learning_rate: float
    """Peak learning rate (each strategy file sets its usual value)."""
    lr_scheduler: str
    """A transformers scheduler name: cosine, linear, constant, constant_with_warmup, ..."""
    warmup_ratio: float
    """Share of the steps spent warming up linearly from 0."""
    max_steps: int
    """Optimizer steps; -1 trains for ``epochs`` instead."""
    epochs: float
    """Passes over the train split, when max_steps is -1."""
    batch_size: int
    """Examples per device per micro-batch."""
    gradient_accumulation_steps: int
    """Micro-batches per optimizer step; the loss is normalised over all their tokens."""
    weight_decay: float
    """AdamW weight decay."""
    max_grad_norm: float
    """Gradient clipping norm (0 disables clipping)."""
    seed: int
    """Seed of initialisation, dropout and data order."""
    precision: str
    """auto (bf16 where the GPU has it, else fp32), fp32, bf16, fp16."""
    gradient_checkpointing: bool
    """Recompute activations in backward: less memory, ~30% more compute."""
    group_by_length: bool
    """Batch examples of similar length (less padding; the order is still seeded)."""
    padding_free: bool
    """Each batch's examples concatenated into one row without padding, positions restarting per example
    (transformers' DataCollatorWithFlattening): the same loss tokens, no compute on padding."""
    eval_steps: int
    """Evaluate on val every this many steps (and checkpoint: early stopping needs both)."""
    early_stopping_patience: Optional[int]
    """Stop after this many evaluations without a lower val loss; null disables it."""
    save_total_limit: int
    """Checkpoints kept on disk for resuming (the best one is always kept)."""
    logging_steps: int
    """Log loss, lr, grad norm, tokens/s, MFU and memory every this many steps."""
    profile_steps: int
    """Trace this many steps with torch.profiler (an MLflow artifact); 0 disables it."""
    launcher: str
    """How dvc.yaml starts the stage, e.g. 'accelerate launch --num_processes 2'."""
    extra_args: dict[str, Any]
    """Any other transformers TrainingArguments field by its own name, e.g. {neftune_noise_alpha: 5,
    torch_compile: true}; checked against the real dataclass by the check stage (an unknown name is refused
    with the nearest one). A field tunelab sets from a train key above is refused, naming that key."""

    def __post_init__(self):
        require_choice("train.precision", self.precision, PRECISIONS)
        require_choice("train.optimizer", self.optimizer, OPTIMIZERS)
        if self.max_steps == 0 or self.max_steps < -1:
            raise TunelabError(f"train.max_steps: {self.max_steps}; use a positive count or -1 for epochs")
        for name in ("batch_size", "gradient_accumulation_steps", "eval_steps", "logging_steps", "save_total_limit",
                     "early_stopping_patience"):
            require_range(f"train.{name}", getattr(self, name), low=1)
        require_range("train.learning_rate", self.learning_rate, low=0, low_open=True)
        # passed to the Trainer as warmup_steps, where a float below 1 is a ratio: 1 or more would be steps
        require_range("train.warmup_ratio", self.warmup_ratio, low=0, high=1, high_open=True)
        require_range("train.epochs", self.epochs, low=0, low_open=True)
        for name in ("weight_decay", "max_grad_norm", "profile_steps"):
            require_range(f"train.{name}", getattr(self, name), low=0)
        check_launcher("train.launcher", self.launcher)
