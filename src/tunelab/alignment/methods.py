"""The alignment methods, one registry entry each: TRL's trainer and config as they are, the data
each learns from, and the per-step figures the align stage records.

| method | TRL trainer                         | learns from                               | reference model                  |
|--------|-------------------------------------|-------------------------------------------|----------------------------------|
| dpo    | DPOTrainer                          | preference pairs (prompt, chosen, rejected)| the SFT model (adapter disabled) |
| kto    | KTOTrainer                          | the pairs unpaired: desirable or not      | the SFT model (adapter disabled) |
| orpo   | trl.experimental.orpo.ORPOTrainer   | preference pairs                          | none (odds ratio)                |
| grpo   | GRPOTrainer                         | train prompts + rewards (rewards.py)      | the SFT model where beta > 0     |
| rloo   | RLOOTrainer                         | train prompts + rewards (rewards.py)      | the SFT model where beta > 0     |

TRL 1.16 has no PPO: GRPO and RLOO replace it. Every method trains a new LoRA adapter on the
merged SFT model; TRL disables that adapter to get the reference, so no second copy is held.
A new method is one ``ALIGN_METHODS.register(AlignMethod(...))`` here plus its conf/align file.
"""

from dataclasses import dataclass
from typing import TYPE_CHECKING, Callable

from tunelab.errors import TunelabError
from tunelab.registry import Registry

if TYPE_CHECKING:
    from tunelab.config.schema import AlignConfig

NONE = "none"
PAIRS, UNPAIRED, PROMPTS = "pairs", "unpaired", "prompts"
"""What a method learns from: preference pairs, answers marked desirable or not, or prompts to sample."""


def _no_options(config: "AlignConfig") -> dict:
    return {}


@dataclass(frozen=True)
class AlignMethod:
    name: str
    data: str
    """PAIRS, UNPAIRED or PROMPTS ("" for ``none``, which learns nothing)."""
    trainer: Callable[[], tuple[type, type]] | None
    """() -> (TRL trainer class, its config class), imported when called (TRL is heavy)."""
    options: Callable[["AlignConfig"], dict] = _no_options
    """The method's own arguments of its TRL config, from tunelab's align config."""
    curves: tuple[str, ...] = ()
    """The TRL log keys the stage records per step (MLflow and metrics/align/*.csv), the loss first."""

    @property
    def rewarded(self) -> bool:
        return self.data == PROMPTS

    @property
    def uses_pairs(self) -> bool:
        return self.data in (PAIRS, UNPAIRED)

    def check(self, config: "AlignConfig") -> None:
        """Refuse settings the method cannot run with, before any model loads."""
        if self.rewarded and config.batch_size % config.num_generations:
            raise TunelabError(f"align.batch_size: {config.batch_size} completions per step must be a multiple of "
                               f"align.num_generations ({config.num_generations}): each prompt's group is sampled whole")
        if self.data == UNPAIRED and config.batch_size < 2:
            raise TunelabError("align.batch_size: KTO estimates its KL term from mismatched rows of a batch; use 2 or more")


ALIGN_METHODS: Registry[AlignMethod] = Registry("align.method")

PREFERENCE_CURVES = ("loss", "rewards/margins", "rewards/accuracies", "rewards/chosen", "rewards/rejected")
REWARD_CURVES = ("loss", "reward", "reward_std", "frac_reward_zero_std", "kl", "completions/mean_length")


def _dpo():
    from trl import DPOConfig, DPOTrainer

    return DPOTrainer, DPOConfig


def _kto():
    from trl import KTOConfig, KTOTrainer

    return KTOTrainer, KTOConfig


def _orpo():
    from trl.experimental.orpo import ORPOConfig, ORPOTrainer

    return ORPOTrainer, ORPOConfig


def _grpo():
    from trl import GRPOConfig, GRPOTrainer

    return GRPOTrainer, GRPOConfig


def _rloo():
    from trl import RLOOConfig, RLOOTrainer

    return RLOOTrainer, RLOOConfig


def preference_options(config: "AlignConfig") -> dict:
    return {"beta": config.beta, "max_length": config.max_length}


def sampling_options(config: "AlignConfig") -> dict:
    """GRPO/RLOO: the group, its sampling, and no completion logging to the console."""
    return {"beta": config.beta, "num_generations": config.num_generations,
            "max_completion_length": config.max_completion_length, "temperature": config.temperature,
            "log_completions": False}


ALIGN_METHODS.register(AlignMethod(NONE, data="", trainer=None))
ALIGN_METHODS.register(AlignMethod("dpo", PAIRS, _dpo, preference_options, PREFERENCE_CURVES))
ALIGN_METHODS.register(AlignMethod("kto", UNPAIRED, _kto, preference_options, ("loss", "rewards/margins", "kl")))
ALIGN_METHODS.register(AlignMethod("orpo", PAIRS, _orpo, preference_options, PREFERENCE_CURVES))
ALIGN_METHODS.register(AlignMethod("grpo", PROMPTS, _grpo, sampling_options, REWARD_CURVES))
ALIGN_METHODS.register(AlignMethod("rloo", PROMPTS, _rloo, sampling_options, REWARD_CURVES))
