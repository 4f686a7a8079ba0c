"""Small training runs on the tiny model, shared by the training tests."""

from pathlib import Path

from configs import conf_section

from tunelab.config.schema import PromptConfig, StrategyConfig, TrainConfig
from tunelab.prompts.formatting import format_example
from tunelab.prompts.templates import PromptTemplate

REVIEWS = [
    ("a moving and funny film", "positive"), ("a dull, tedious mess", "negative"),
    ("wonderful acting throughout", "positive"), ("awful pacing and a limp plot", "negative"),
    ("sharp, warm and clever", "positive"), ("tedious from start to end", "negative"),
    ("funny and moving", "positive"), ("a limp and dull story", "negative"),
]
PROMPT = PromptConfig(name="t", template="Review: {{ text }}\nSentiment? ||| {{ answer_choices[label_index] }}",
                      answer_choices="negative ||| positive")


def formatted_rows(tokenizer) -> list[dict]:
    """Rows as the format stage writes them, through the same code."""
    labels = ["negative", "positive"]
    template, settings = PromptTemplate(PROMPT), conf_section("format")
    return [
        format_example({"id": str(i), "text": text, "label": label}, labels, template, PROMPT, settings, tokenizer)[0]
        for i, (text, label) in enumerate(REVIEWS)
    ]


def strategy_from_conf(name: str) -> StrategyConfig:
    """The strategy exactly as conf/strategy/<name>.yaml configures it."""
    return conf_section("strategy", (f"strategy={name}",))


def tiny_train_config(**overrides) -> TrainConfig:
    """conf/'s train section, sized for the tiny model (what a tiny run changes, and nothing else)."""
    tiny = dict(learning_rate=1e-2, warmup_ratio=0.0, max_steps=12, batch_size=4, eval_steps=6,
                logging_steps=1, early_stopping_patience=None, profile_steps=0, lr_scheduler="constant")
    return conf_section("train", **{**tiny, **overrides})


def train_tiny(base_dir: Path, output_dir: Path, strategy: StrategyConfig, rows: list[dict], train: TrainConfig,
               callbacks: list = ()):
    """Build the trainer for a tiny run; returns (trainer, tokenizer)."""
    from transformers import AutoTokenizer, set_seed

    from tunelab.training.run import build_trainer
    from tunelab.training.strategies import trainable_model

    set_seed(train.seed)
    tokenizer = AutoTokenizer.from_pretrained(base_dir)
    model = trainable_model(base_dir, strategy, train.gradient_checkpointing)
    trainer = build_trainer(model, tokenizer, train, rows, rows, output_dir, callbacks=list(callbacks))
    return trainer, tokenizer


def snapshot(model) -> dict:
    return {name: p.detach().clone() for name, p in model.named_parameters()}
