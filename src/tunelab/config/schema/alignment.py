"""``align``: preference pairs and the alignment method after fine-tuning."""

from dataclasses import dataclass
from typing import Any, Optional

from tunelab.config.schema.checks import require_choice, require_range
from tunelab.config.schema.training import PRECISIONS, LoraOptions
from tunelab.errors import TunelabError

ALIGN_SOURCES = ("task", "file")


@dataclass(frozen=True)
class PreferencesConfig:
    """The preference pairs DPO, KTO and ORPO learn from (stage ``preferences``)."""

    source: str
    """task: built from the task's own train rows, chosen = the gold target, rejected = the SFT model's
    own wrong sample; file: a JSONL of TRL's preference rows at ``path``."""
    path: Optional[str]
    """source=file: the JSONL (prompt, chosen, rejected: text, or chats of role/content turns)."""
    fields: dict[str, str]
    """source=file: TRL's field name → the file's, e.g. {chosen: better, rejected: worse}."""
    prompts: int
    """source=task: the first N formatted train rows (a shuffle) whose answers the SFT model samples."""
    samples: int
    """source=task: sampled answers per prompt (seeded); each wrong one can be a rejected answer."""
    pairs_per_prompt: int
    """source=task: at most this many pairs per prompt (one per distinct wrong answer)."""
    max_new_tokens: int
    """source=task: tokens per sampled answer."""
    temperature: float
    """source=task: sampling temperature (top_k 50)."""
    correct_at: float
    """source=task: a sample whose task score (Task.score_answer) reaches this is right, never rejected."""

    def __post_init__(self):
        require_choice("align.preferences.source", self.source, ALIGN_SOURCES)
        if (self.source == "file") != (self.path is not None):
            raise TunelabError("align.preferences.path: set it exactly when source=file")
        for name in ("prompts", "samples", "pairs_per_prompt", "max_new_tokens"):
            require_range(f"align.preferences.{name}", getattr(self, name), low=1)
        require_range("align.preferences.temperature", self.temperature, low=0, low_open=True)
        require_range("align.preferences.correct_at", self.correct_at, low=0, high=1, low_open=True)


@dataclass(frozen=True)
class AlignConfig:
    """The ``align`` stage: a second training phase on the SFT model with TRL's trainers as they are.
    conf/align/none.yaml holds every setting; each method's file changes what it needs."""

    method: str
    """A registered alignment method (tunelab.alignment.methods): none, dpo, kto, orpo, grpo, rloo."""
    learning_rate: float
    """Peak learning rate of the new LoRA adapter (constant after a 10% warm-up)."""
    max_steps: int
    """Optimizer steps."""
    batch_size: int
    """Pairs (DPO, ORPO), rows (KTO) or completions, i.e. prompts × num_generations (GRPO, RLOO), per micro-batch."""
    gradient_accumulation_steps: int
    beta: float
    """DPO/KTO: the KL strength against the reference (the SFT model); ORPO: the odds-ratio weight;
    GRPO/RLOO: the KL coefficient (0: no reference model is run)."""
    max_length: int
    """Preference methods: prompt + answer tokens (longer pairs are cut from the end)."""
    num_generations: int
    """GRPO/RLOO: sampled completions per prompt (the group whose rewards are compared)."""
    max_completion_length: int
    """GRPO/RLOO: tokens per sampled completion."""
    temperature: float
    """GRPO/RLOO: sampling temperature of the completions."""
    rewards: dict[str, float]
    """GRPO/RLOO: registered rewards (tunelab.alignment.rewards) and their weights."""
    lora: LoraOptions
    """The new adapter trained on the merged SFT model; disabled, it is the reference model."""
    precision: str
    """auto (bf16 where the GPU has it, else fp32), fp32, bf16, fp16: tunelab's, never TRL's bf16 default."""
    gradient_checkpointing: bool
    """tunelab's, never TRL's default (on): recompute activations, less memory, ~30% more compute."""
    logging_steps: int
    save_steps: int
    """Checkpoint every this many steps; a killed run resumes from the newest complete one."""
    seed: int
    """Seed of the adapter's initialisation, data order, and the sampled pairs and completions."""
    preferences: PreferencesConfig
    extra_args: dict[str, Any]
    """Any other field of the method's TRL config by its own name (DPOConfig, GRPOConfig, ...), e.g.
    {loss_type: ipo}; checked like train.extra_args."""

    def __post_init__(self):
        require_choice("align.precision", self.precision, PRECISIONS)
        for name in ("max_steps", "batch_size", "gradient_accumulation_steps", "max_length", "max_completion_length",
                     "logging_steps", "save_steps"):
            require_range(f"align.{name}", getattr(self, name), low=1)
        require_range("align.num_generations", self.num_generations, low=2)
        require_range("align.learning_rate", self.learning_rate, low=0, low_open=True)
        require_range("align.beta", self.beta, low=0)
        require_range("align.temperature", self.temperature, low=0, low_open=True)
        if not self.rewards:
            raise TunelabError("align.rewards: name at least one reward (tunelab.alignment.rewards), e.g. {correct: 1.0}")
