"""Typed, frozen configuration: one dataclass per section of params.yaml.

conf/ (Hydra) mirrors these classes; DVC composes conf/ into params.yaml; each stage loads the
sections it reads with :func:`tunelab.config.load.to_section`. OmegaConf rejects unknown
keys and wrong types (naming the key); ``__post_init__`` checks choices and the fields a
choice requires.

One module per section (or group of sections); everything is importable from here.
"""

from tunelab.config.schema.alignment import ALIGN_SOURCES, AlignConfig, PreferencesConfig
from tunelab.config.schema.checks import COMMIT, require_choice, require_commit, require_range, require_set
from tunelab.config.schema.cluster import ClusterConfig
from tunelab.config.schema.data import (
    AUTO_LABELS,
    CLASSIFICATION,
    DATA_SOURCES,
    GENERATED_SOURCES,
    PIP_SOURCES,
    DataConfig,
    FormatConfig,
    PromptConfig,
    SourceConfig,
)
from tunelab.config.schema.deployment import BenchConfig, QuantizeConfig
from tunelab.config.schema.evaluation import (
    EXTRA_SET_DATA_KEYS,
    GENERATIVE_METHODS,
    PROMPT_METHODS,
    SCORINGS,
    SELECTIONS,
    EvalConfig,
    ExtraTestSetConfig,
    PromptingConfig,
    PromptSearchConfig,
    ProposerConfig,
    RecommendConfig,
)
from tunelab.config.schema.model import MODEL_SOURCES, ModelConfig
from tunelab.config.schema.serving import LoadTestConfig, ServeConfig, ServeSamplingConfig
from tunelab.config.schema.tracking import TrackingConfig
from tunelab.config.schema.training import (
    OPTIMIZERS,
    PRECISIONS,
    QAT_SCHEMES,
    IA3Options,
    LoraOptions,
    PrefixTuningOptions,
    PromptTuningOptions,
    QATOptions,
    QuantizationOptions,
    StrategyConfig,
    TrainConfig,
)

RENAMED = {
    "eval.strategies": "eval.prompting",
    "eval.fine_tuned_strategies": "eval.fine_tuned_prompting",
}
"""Keys that were renamed, and their new names: a config that still uses one is refused, naming
the new key ("strategy" is the fine-tuning method only; prompting methods are "prompting")."""

SECTIONS = {
    "model": ModelConfig, "data": DataConfig, "prompt": PromptConfig, "format": FormatConfig,
    "strategy": StrategyConfig, "train": TrainConfig, "tracking": TrackingConfig, "eval": EvalConfig,
    "quantize": QuantizeConfig, "bench": BenchConfig, "serve": ServeConfig, "align": AlignConfig,
    "cluster": ClusterConfig,
}
"""Every section of params.yaml and its dataclass: what ``tunelab.validation.validate_config`` checks in one go."""

__all__ = [
    "ALIGN_SOURCES",
    "AUTO_LABELS",
    "AlignConfig",
    "BenchConfig",
    "CLASSIFICATION",
    "COMMIT",
    "ClusterConfig",
    "DATA_SOURCES",
    "DataConfig",
    "EXTRA_SET_DATA_KEYS",
    "EvalConfig",
    "ExtraTestSetConfig",
    "FormatConfig",
    "GENERATED_SOURCES",
    "GENERATIVE_METHODS",
    "IA3Options",
    "LoadTestConfig",
    "LoraOptions",
    "MODEL_SOURCES",
    "ModelConfig",
    "OPTIMIZERS",
    "PIP_SOURCES",
    "PRECISIONS",
    "PROMPT_METHODS",
    "PreferencesConfig",
    "PrefixTuningOptions",
    "PromptConfig",
    "PromptSearchConfig",
    "PromptTuningOptions",
    "PromptingConfig",
    "ProposerConfig",
    "QATOptions",
    "QAT_SCHEMES",
    "QuantizationOptions",
    "QuantizeConfig",
    "RENAMED",
    "RecommendConfig",
    "SCORINGS",
    "SECTIONS",
    "SELECTIONS",
    "ServeConfig",
    "ServeSamplingConfig",
    "SourceConfig",
    "StrategyConfig",
    "TrackingConfig",
    "TrainConfig",
    "require_choice",
    "require_commit",
    "require_range",
    "require_set",
]
