"""One model × one prompting method on the test rows: predictions, metrics and speed.

The same evaluator scores every variant (base, trained, quantized), so their figures differ
only by the model. Two scorings, each optional per prompting method:

- choice: the label whose answer choice the model finds most likely after the prompt;
- generate: what the model writes, parsed into a label (chain-of-thought and
  self-consistency answer this way only); unparseable outputs count as wrong and are reported.
"""

import time
from dataclasses import dataclass, field

import torch
from tqdm import tqdm

from tunelab.config.schema import PromptingConfig
from tunelab.errors import TunelabError
from tunelab.evaluation.batching import batches, pad_id
from tunelab.evaluation.generation import Sampling, generate, majority_vote
from tunelab.evaluation.metrics import classification_report
from tunelab.evaluation.parsing import parse_choice
from tunelab.evaluation.prompting import EvalPrompt
from tunelab.evaluation.scoring import SharedPrefix, choice_logprobs, choice_logprobs_one_pass, common_prefix_length
from tunelab.prompts.chat import model_completion
from tunelab.prompts.tokenization import tokenize_example

UNPARSEABLE = "(unparseable)"
"""The prediction recorded for a generation that names no choice."""


@dataclass(frozen=True)
class EvalSettings:
    batch_size: int
    length_normalize: bool
    seed: int
    continues_a_cache: bool = True
    """False for models that cannot continue a key/value cache (PEFT prompt/prefix tuning):
    no shared prefix, and choices scored the plain one-pass way."""


@dataclass
class StrategyResult:
    predictions: list[dict]
    metrics: dict = field(default_factory=dict)
    """Per scoring: the classification report plus speed (and unparseable share for generate)."""


def context_length(model) -> int | None:
    return getattr(model.config, "max_position_embeddings", None)


def tokenize_prompts(prompts: list[EvalPrompt], tokenizer, add_special_tokens: bool, needed: int,
                     context: int | None, template: str) -> list[list[int]]:
    """Token ids of every prompt, refused where prompt + answer would not fit the model's context."""
    rows = [tokenizer(p.text, add_special_tokens=add_special_tokens)["input_ids"] for p in prompts]
    for prompt, ids in zip(prompts, rows):
        if context is not None and len(ids) + needed > context:
            raise TunelabError(f"prompt {template!r}: test row {prompt.id} needs {len(ids)} prompt tokens + {needed} "
                               f"for the answer, more than the model's context of {context}; shorten the template "
                               "or use fewer shots")
    return rows


def choice_token_ids(prompts: list[EvalPrompt], tokenizer, use_chat_template: bool) -> list[list[int]]:
    """Each choice's tokens as they follow a prompt: tokenised in context, and separated from the
    prompt as a training completion is (a space without a chat template), without its EOS."""
    if any(p.choices != prompts[0].choices for p in prompts):
        raise TunelabError("choice scoring needs the same answer choices on every row; this template renders "
                           "row-specific choices")
    choices = []
    for choice in prompts[0].choices:
        completion = model_completion(tokenizer, choice, use_chat_template).removesuffix(tokenizer.eos_token)
        tokens = tokenize_example(tokenizer, prompts[0].text, completion, max_length=10**9,
                                  add_special_tokens=not use_chat_template)
        choices.append(tokens.input_ids[tokens.prompt_length:])
    return choices


def shared_prefix(model, rows: list[list[int]], settings: EvalSettings) -> SharedPrefix | None:
    """The tokens every prompt starts with (system prompt, demonstrations), run once."""
    length = common_prefix_length(rows) if settings.continues_a_cache and len(rows) > 1 else 0
    return SharedPrefix(model, rows[0][:length]) if length else None


def after_prefix(rows: list[list[int]], prefix: SharedPrefix | None) -> list[list[int]]:
    return [row[len(prefix.ids):] for row in rows] if prefix else rows


def score_by_choice(model, prompts: list[EvalPrompt], rows: list[list[int]], choices: list[list[int]], pad: int,
                    prefix: SharedPrefix | None, labels: list[str], settings: EvalSettings,
                    desc: str) -> tuple[list[dict], float]:
    """Predicted label and per-choice log-probabilities per row."""
    started = time.perf_counter()
    scores = []
    with tqdm(total=len(rows), desc=desc, unit="ex") as progress:
        for batch in batches(after_prefix(rows, prefix), settings.batch_size):
            if settings.continues_a_cache:
                scores.append(choice_logprobs(model, batch, choices, pad, prefix, settings.length_normalize))
            else:
                scores.append(choice_logprobs_one_pass(model, batch, choices, pad, settings.length_normalize))
            progress.update(len(batch))
    seconds = time.perf_counter() - started
    outputs = []
    for prompt, row_scores in zip(prompts, torch.cat(scores).tolist()):
        outputs.append({"prediction": labels[max(range(len(labels)), key=row_scores.__getitem__)],
                        "logprobs": dict(zip(prompt.choices, (round(s, 4) for s in row_scores)))})
    return outputs, seconds


def score_by_generation(model, tokenizer, prompts: list[EvalPrompt], rows: list[list[int]], prefix: SharedPrefix | None,
                        labels: list[str], prompting: PromptingConfig, settings: EvalSettings,
                        desc: str) -> tuple[list[dict], float]:
    """Generate, parse each text into a label, and vote when several paths were sampled."""
    torch.manual_seed(settings.seed)
    started = time.perf_counter()
    sampling = Sampling(prompting.samples, prompting.temperature, prompting.top_k, prompting.top_p)
    texts = []
    with tqdm(total=len(rows), desc=desc, unit="ex") as progress:
        for batch in batches(after_prefix(rows, prefix), settings.batch_size):
            texts += generate(model, tokenizer, batch, prompting.max_new_tokens, sampling, prefix,
                              prompt_once=settings.continues_a_cache)
            progress.update(len(batch))
    seconds = time.perf_counter() - started
    outputs = []
    for prompt, samples in zip(prompts, texts):
        answers = [parse_choice(text, prompt.choices) for text in samples]
        answer, share = majority_vote(answers, prompt.choices)
        output = {"prediction": labels[prompt.choices.index(answer)] if answer else UNPARSEABLE, "texts": samples}
        if prompting.samples > 1:
            output |= {"votes": answers, "vote_share": round(share, 4)}
        outputs.append(output)
    return outputs, seconds


def scoring_metrics(prompts: list[EvalPrompt], outputs: list[dict], labels: list[str], seconds: float, seed: int) -> dict:
    predicted = [output["prediction"] for output in outputs]
    report = classification_report([p.label for p in prompts], predicted, labels, seed=seed)
    report |= {"seconds": round(seconds, 2), "examples_per_second": round(len(prompts) / seconds, 2)}
    if any("texts" in output for output in outputs):
        report["unparseable_share"] = sum(p == UNPARSEABLE for p in predicted) / len(predicted)
    if any("vote_share" in output for output in outputs):
        report["mean_vote_share"] = sum(o["vote_share"] for o in outputs) / len(outputs)
    return report


def evaluate_prompting(model, tokenizer, prompts: list[EvalPrompt], prompting: PromptingConfig, template: str,
                      use_chat_template: bool, labels: list[str], settings: EvalSettings, name: str) -> StrategyResult:
    add_special_tokens = not use_chat_template  # a chat template writes its own special tokens
    needed = prompting.max_new_tokens if "generate" in prompting.scoring else 0
    rows = tokenize_prompts(prompts, tokenizer, add_special_tokens, needed, context_length(model), template)
    result = StrategyResult(predictions=[{"id": p.id, "label": p.label, "prompt_tokens": len(r)}
                                         for p, r in zip(prompts, rows)])
    started = time.perf_counter()
    prefix = shared_prefix(model, rows, settings)  # once for both scorings; each counts its time
    prefix_seconds = time.perf_counter() - started
    if "choice" in prompting.scoring:
        choices = choice_token_ids(prompts, tokenizer, use_chat_template)
        outputs, seconds = score_by_choice(model, prompts, rows, choices, pad_id(tokenizer), prefix, labels, settings,
                                           f"{name} choice")
        result.metrics["choice"] = scoring_metrics(prompts, outputs, labels, prefix_seconds + seconds, settings.seed)
        for prediction, output in zip(result.predictions, outputs):
            prediction["choice"] = output
    if "generate" in prompting.scoring:
        outputs, seconds = score_by_generation(model, tokenizer, prompts, rows, prefix, labels, prompting, settings,
                                               f"{name} generate")
        result.metrics["generate"] = scoring_metrics(prompts, outputs, labels, prefix_seconds + seconds, settings.seed)
        for prediction, output in zip(result.predictions, outputs):
            prediction["generate"] = output
    return result
