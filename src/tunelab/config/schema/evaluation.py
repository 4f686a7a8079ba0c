"""``eval``: prompting methods, the prompt search, extra test sets and the recommendation's rule."""

import dataclasses
from dataclasses import dataclass, field
from typing import Any, Optional

from tunelab.config.schema.checks import require_choice, require_range
from tunelab.config.schema.data import DataConfig, PromptConfig, SourceConfig
from tunelab.errors import TunelabError

PROMPT_METHODS = ("zero_shot", "few_shot", "chain_of_thought", "self_consistency", "optimized")
SCORINGS = ("choice", "generate")
GENERATIVE_METHODS = ("chain_of_thought", "self_consistency")
SELECTIONS = ("balanced", "nearest")
"""How few-shot demonstrations are chosen (tunelab.evaluation.demonstrations)."""


@dataclass(frozen=True)
class PromptingConfig:
    """One way of prompting a model for the task, scored by the ``evaluate`` stage."""

    method: str
    """zero_shot, few_shot (demonstrations from train), chain_of_thought, self_consistency, or
    optimized: the prompting the search_prompt stage found best on val (eval.prompt_search)."""
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
    """few_shot: demonstrations from train, chosen as ``selection`` says."""
    selection: str = "balanced"
    """few_shot: balanced (drawn by eval.seed, balanced across labels, the same for every row) or
    nearest (each row's own: the ``shots`` train rows nearest it by the prompted model's embedding)."""
    pool: int = 400
    """few_shot with selection=nearest: the first N train rows (a shuffle) searched for neighbours."""
    calibrate: bool = False
    """choice: contextual calibration: each choice's probability divided by the one the model gives it
    for content-free inputs under the same prompt, which takes out a bias toward one answer."""
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
        require_choice(f"{key}.selection", self.selection, SELECTIONS)
        if self.calibrate and "choice" not in self.scoring:
            raise TunelabError(f"{key}.calibrate: calibration corrects answer-choice scores; add choice to scoring")
        if self.method == "optimized" and len(self.scoring) != 1:
            raise TunelabError(f"{key}.scoring: optimized is scored the way its search was, by one scoring "
                               f"(choice or generate), not {self.scoring}")
        if (self.method == "self_consistency") != (self.samples > 1):
            raise TunelabError(f"{key}.samples: set samples > 1 exactly when method=self_consistency")
        for name in ("max_new_tokens", "limit", "samples", "pool"):
            require_range(f"{key}.{name}", getattr(self, name), low=1)
        require_range(f"{key}.shots", self.shots, low=0)
        require_range(f"{key}.temperature", self.temperature, low=0, low_open=True)
        require_range(f"{key}.top_k", self.top_k, low=0)
        require_range(f"{key}.top_p", self.top_p, low=0, high=1, low_open=True)


@dataclass(frozen=True)
class ProposerConfig:
    """The prompt search's optional OPRO-style proposer: an OpenAI-compatible endpoint that writes
    new instructions (the winning template's system message) from those tried and their val scores."""

    base_url: str
    """e.g. http://127.0.0.1:8000/v1 (``transformers serve MODEL``, vLLM, or a hosted API)."""
    model: str
    """The model name the endpoint serves."""
    rounds: int = 1
    """Propose, score on val, propose again with the new scores."""
    proposals: int = 4
    """Instructions asked for per round."""
    temperature: float = 1.0
    max_tokens: int = 96
    api_key_env: str = "OPENAI_API_KEY"
    """The environment variable holding the endpoint's key (a local server needs none)."""
    timeout: float = 120.0
    """Seconds a request may take."""

    def __post_init__(self):
        for name in ("rounds", "proposals", "max_tokens"):
            require_range(f"eval.prompt_search.proposer.{name}", getattr(self, name), low=1)
        require_range("eval.prompt_search.proposer.timeout", self.timeout, low=0, low_open=True)


@dataclass(frozen=True)
class PromptSearchConfig:
    """The ``search_prompt`` stage: the prompting of the base model that scores best on val, which
    the evaluate stage then scores once on test as the prompting method ``optimized``."""

    shots: list[int]
    """Demonstration counts tried."""
    selection: list[str]
    """How demonstrations are chosen, each tried (balanced, nearest; see PromptingConfig.selection)."""
    calibrate: list[bool]
    """With and without contextual calibration (choice scoring only)."""
    rows: int
    """Val rows each candidate is scored on (the first N; val is a shuffle)."""
    templates: dict[str, PromptConfig]
    """Templates searched besides the training prompt and those of eval.prompting's zero_shot and
    few_shot methods (a conf/prompt file each: ``/prompt@eval.prompt_search.templates.NAME: NAME``)."""
    candidates: Optional[int] = None
    """At most this many candidates (a seeded sample of the grid, zero-shot kept); null: the whole grid."""
    proposer: Optional[ProposerConfig] = None
    """After the grid: new instructions from an OpenAI-compatible endpoint, tried with the winner's
    settings (OPRO-style; evaluation/proposer.py); null: off."""

    def __post_init__(self):
        for name in ("shots", "selection", "calibrate"):
            if not getattr(self, name):
                raise TunelabError(f"eval.prompt_search.{name}: name at least one value to try")
        for shots in self.shots:
            require_range("eval.prompt_search.shots", shots, low=0)
        for selection in self.selection:
            require_choice("eval.prompt_search.selection", selection, SELECTIONS)
        require_range("eval.prompt_search.rows", self.rows, low=1)
        require_range("eval.prompt_search.candidates", self.candidates, low=1)


EXTRA_SET_DATA_KEYS = ("format", "text_field", "label_field", "rating_field", "rating_margin", "id_field", "layout",
                       "fields", "references_field")
"""The data keys an extra test set may set for its own rows; the task, labels and split stay the main data's."""


@dataclass(frozen=True)
class ExtraTestSetConfig:
    """Another held-out set (another domain, a harder slice), fetched and prepared like the main
    data and scored like the test split by every variant and prompting method."""

    source: SourceConfig
    """Where its rows come from, as data.source."""
    size: Optional[int] = None
    """Rows scored (a seeded sample, as the split is); null: all. eval.limit and a method's limit apply too."""
    data: dict[str, Any] = field(default_factory=dict)
    """Data keys that differ for these rows (format, text_field, label_field, references_field, layout, fields...)."""

    def check(self, key: str) -> None:
        require_range(f"{key}.size", self.size, low=1)
        if unknown := [name for name in self.data if name not in EXTRA_SET_DATA_KEYS]:
            raise TunelabError(f"{key}.data.{unknown[0]}: an extra test set may set only {list(EXTRA_SET_DATA_KEYS)}; "
                               "its task, labels and split are the main data's")

    def data_config(self, main: "DataConfig") -> "DataConfig":
        """How its rows are read and cleaned: the main data config with this set's keys."""
        return dataclasses.replace(main, source=self.source, train_source=None, test_source=None, **self.data)


@dataclass(frozen=True)
class RecommendConfig:
    """When the report may recommend a cheaper row than the best: non-inferiority within a margin
    (reporting/significance.py says how the intervals are made and corrected)."""

    margin: float
    """How much worse than the best, on the headline metric (absolute: 0.02 is two accuracy points),
    a cheaper row may be and still count as non-inferior."""
    level: float
    """One-sided error rate of the whole table's non-inferiority claims (Bonferroni-corrected per row)."""

    def __post_init__(self):
        require_range("eval.recommend.margin", self.margin, low=0)
        require_range("eval.recommend.level", self.level, low=0, high=0.5, low_open=True, high_open=True)


@dataclass(frozen=True)
class EvalConfig:
    """The ``evaluate`` stage: every model variant × prompting method on the frozen test split."""

    prompting: dict[str, PromptingConfig]
    """Prompting methods by name; the base model is scored with all of them."""
    fine_tuned_prompting: list[str]
    """The prompting methods applied to the trained (and quantized) variants."""
    batch_size: int
    """Test rows per forward pass, and per batch of sampled generation (each row with its samples)."""
    length_normalize: bool
    """Divide a choice's log-probability by its token count (matters when choices differ in length)."""
    limit: Optional[int]
    """Score only the first N test rows with every prompting method (quick runs); null: all."""
    seed: int
    """Seed of the demonstrations, the sampling and the bootstrap."""
    extra_test_sets: dict[str, ExtraTestSetConfig]
    """Held-out sets scored besides the test split, by name; the report shows each as its own column."""
    prompt_search: PromptSearchConfig
    """What the search_prompt stage tries on val for the ``optimized`` prompting method."""
    recommend: RecommendConfig
    """The report's rule for recommending a row cheaper than the best."""
    headline: Optional[str] = None
    """The fine-tuned result the benchmark plots, the report and a sweep's runs table compare, as
    PROMPTING/SCORING (e.g. zero_shot/choice); null: the first of fine_tuned_prompting, first scoring."""
    generate_batch_size: Optional[int] = None
    """Test rows per greedy generation batch; null: batch_size (an eval file written before the key
    keeps working). Decoding costs less per row in a larger batch, where scoring prompts does not (on
    2 CPU cores, 48 against 16: greedy generation 25-30% faster, choice scoring 20-40% slower); a
    dynamically quantized variant's answers depend on it (one activation scale per batch)."""

    def __post_init__(self):
        if not self.prompting:
            raise TunelabError("eval.prompting: name at least one prompting method")
        for name, prompting in self.prompting.items():
            prompting.check(f"eval.prompting.{name}")
        if len([p for p in self.prompting.values() if p.method == "optimized"]) > 1:
            raise TunelabError("eval.prompting: name one optimized method; the search finds one winner")
        if not self.fine_tuned_prompting:
            raise TunelabError("eval.fine_tuned_prompting: name at least one prompting method for the fine-tuned variants")
        unknown = [name for name in self.fine_tuned_prompting if name not in self.prompting]
        if unknown:
            raise TunelabError(f"eval.fine_tuned_prompting: {unknown} not in eval.prompting {list(self.prompting)}")
        if searched := [name for name in self.fine_tuned_prompting if self.prompting[name].method == "optimized"]:
            raise TunelabError(f"eval.fine_tuned_prompting: {searched[0]!r} is the base model's searched prompting; "
                               "a fine-tuned variant is scored with the prompt it was trained on (zero_shot)")
        require_range("eval.batch_size", self.batch_size, low=1)
        require_range("eval.generate_batch_size", self.generate_batch_size, low=1)
        require_range("eval.limit", self.limit, low=1)
        for name, extra in self.extra_test_sets.items():
            extra.check(f"eval.extra_test_sets.{name}")
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
