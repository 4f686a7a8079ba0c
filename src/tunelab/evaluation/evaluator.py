"""One model × one prompting method on the test rows: predictions, metrics and speed.

The same evaluator scores every variant (base, trained, quantized), so their figures differ
only by the model. Classification has two scorings, each optional per prompting method:

- choice: the label whose answer choice the model finds most likely after the prompt;
- generate: what the model writes, parsed into a label (chain-of-thought and
  self-consistency answer this way only); unparseable outputs count as wrong and are reported.

The generative tasks generate only: the task reads each answer out of the text and scores it
against the references (tasks.score_generated), with the same batching and shared prefix.
"""

import time
from dataclasses import dataclass, field, replace

import torch
from tqdm import tqdm

from tunelab.config.schema import PromptConfig, PromptingConfig
from tunelab.errors import TunelabError
from tunelab.evaluation.batching import batches, pad_id
from tunelab.evaluation.demonstrations import choose_demonstrations
from tunelab.evaluation.generation import Sampling, generate, generate_and_score, majority_vote
from tunelab.evaluation.metrics import classification_report
from tunelab.evaluation.parsing import parse_choice
from tunelab.evaluation.prompting import ChatPrompt, EvalPrompt, build_chat_prompts, build_prompts
from tunelab.evaluation.scoring import (
    CONTENT_FREE,
    SharedPrefix,
    calibrated,
    choice_logprobs,
    choice_logprobs_one_pass,
    common_prefix_length,
    content_free_bias,
)
from tunelab.evaluation.tasks import Task, score_generated
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
    generate_batch_size: int | None = None
    """Rows per greedy generation batch (eval.generate_batch_size); None: batch_size."""

    def generation_batch(self, samples: int) -> int:
        """Rows per generation batch: sampling keeps batch_size rows, each with its ``samples`` paths."""
        return (self.generate_batch_size or self.batch_size) if samples == 1 else self.batch_size


@dataclass
class PromptingResult:
    predictions: list[dict]
    metrics: dict = field(default_factory=dict)
    """Per scoring: the task's report plus speed (and unparseable share for generate)."""

    def add(self, scoring: str, outputs: list[dict], metrics: dict) -> None:
        """One scoring's per-row outputs and its metrics."""
        self.metrics[scoring] = metrics
        for prediction, output in zip(self.predictions, outputs):
            prediction[scoring] = output

    def only(self, scorings: list[str]) -> "PromptingResult":
        """The same result as scored with ``scorings`` alone (each prediction keeps its own ones)."""
        dropped = set(self.metrics) - set(scorings)
        return PromptingResult([{k: v for k, v in row.items() if k not in dropped} for row in self.predictions],
                               {scoring: self.metrics[scoring] for scoring in scorings})


def context_length(model) -> int | None:
    return getattr(model.config, "max_position_embeddings", None)


def tokenize_prompts(prompts: list[EvalPrompt] | list[ChatPrompt], tokenizer, add_special_tokens: bool, needed: int,
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


def choice_scores(model, rows: list[list[int]], choices: list[list[int]], pad: int, prefix: SharedPrefix | None,
                  settings: EvalSettings, desc: str | None) -> tuple[torch.Tensor, float]:
    """Log-probabilities [rows, choices], and the seconds they took (a progress bar unless ``desc`` is None)."""
    started = time.perf_counter()
    scores = []
    with tqdm(total=len(rows), desc=desc, unit="ex", disable=desc is None) as progress:
        for batch in batches(after_prefix(rows, prefix), settings.batch_size):
            if settings.continues_a_cache:
                scores.append(choice_logprobs(model, batch, choices, pad, prefix, settings.length_normalize))
            else:
                scores.append(choice_logprobs_one_pass(model, batch, choices, pad, settings.length_normalize))
            progress.update(len(batch))
    return torch.cat(scores), time.perf_counter() - started


def choice_outputs(prompts: list[EvalPrompt], scores: torch.Tensor, labels: list[str],
                   bias: torch.Tensor | None = None) -> list[dict]:
    """Predicted label and per-choice log-probabilities per row (the prediction calibrated by ``bias``, if given)."""
    decided = calibrated(scores, bias) if bias is not None else scores
    outputs = []
    for prompt, row_scores, row_decided in zip(prompts, scores.tolist(), decided.tolist()):
        prediction = labels[max(range(len(labels)), key=row_decided.__getitem__)]
        outputs.append({"prediction": prediction, "logprobs": dict(zip(prompt.choices, (round(s, 4) for s in row_scores))),
                        "score": float(prediction == prompt.label)})
    return outputs


def generate_texts(model, tokenizer, rows: list[list[int]], prefix: SharedPrefix | None, prompting: PromptingConfig,
                   settings: EvalSettings, desc: str,
                   choices: list[list[int]] | None = None) -> tuple[list[list[str]], torch.Tensor | None, float]:
    """Each row's ``prompting.samples`` generated texts (greedy for one), the ``choices``' log-probabilities
    [rows, choices] from the same pass where given (greedy only), and the seconds it took."""
    torch.manual_seed(settings.seed)
    started = time.perf_counter()
    sampling = Sampling(prompting.samples, prompting.temperature, prompting.top_k, prompting.top_p)
    texts, scores = [], []
    with tqdm(total=len(rows), desc=desc, unit="ex") as progress:
        for batch in batches(after_prefix(rows, prefix), settings.generation_batch(prompting.samples)):
            if choices is None:
                texts += generate(model, tokenizer, batch, prompting.max_new_tokens, sampling, prefix,
                                  prompt_once=settings.continues_a_cache)
            else:
                batch_texts, batch_scores = generate_and_score(model, tokenizer, batch, prompting.max_new_tokens, choices,
                                                               prefix, settings.length_normalize)
                texts += batch_texts
                scores.append(batch_scores)
            progress.update(len(batch))
    return texts, torch.cat(scores) if scores else None, time.perf_counter() - started


def generation_outputs(prompts: list[EvalPrompt], texts: list[list[str]], labels: list[str],
                       prompting: PromptingConfig) -> list[dict]:
    """Parse each generated text into a label, and vote when several paths were sampled."""
    outputs = []
    for prompt, samples in zip(prompts, texts):
        answers = [parse_choice(text, prompt.choices) for text in samples]
        answer, share = majority_vote(answers, prompt.choices)
        prediction = labels[prompt.choices.index(answer)] if answer else UNPARSEABLE
        output = {"prediction": prediction, "texts": samples, "score": float(prediction == prompt.label)}
        if prompting.samples > 1:
            output |= {"votes": answers, "vote_share": round(share, 4)}
        outputs.append(output)
    return outputs


def scoring_metrics(prompts: list[EvalPrompt], outputs: list[dict], labels: list[str], seconds: float, seed: int) -> dict:
    predicted = [output["prediction"] for output in outputs]
    report = with_speed(classification_report([p.label for p in prompts], predicted, labels, seed=seed),
                        len(prompts), seconds)
    if any("texts" in output for output in outputs):
        report["unparseable_share"] = sum(p == UNPARSEABLE for p in predicted) / len(predicted)
    if any("vote_share" in output for output in outputs):
        report["mean_vote_share"] = sum(o["vote_share"] for o in outputs) / len(outputs)
    return report


def with_speed(report: dict, examples: int, seconds: float) -> dict:
    return report | {"seconds": round(seconds, 2), "examples_per_second": round(examples / seconds, 2)}


def timed_shared_prefix(model, rows: list[list[int]], settings: EvalSettings) -> tuple[SharedPrefix | None, float]:
    started = time.perf_counter()
    prefix = shared_prefix(model, rows, settings)  # once for every scoring; each counts its time
    return prefix, time.perf_counter() - started


def evaluate_generated(model, tokenizer, prompts: list[ChatPrompt], prompting: PromptingConfig, template: str,
                       task: Task, settings: EvalSettings, name: str) -> PromptingResult:
    """A generative task's scoring: generate, then the task reads and scores each answer (maj@k
    over several samples, where the task votes)."""
    rows = tokenize_prompts(prompts, tokenizer, False, prompting.max_new_tokens, context_length(model), template)
    result = PromptingResult(predictions=[{"id": p.id, "references": p.references, "prompt_tokens": len(r)}
                                          for p, r in zip(prompts, rows)])
    prefix, prefix_seconds = timed_shared_prefix(model, rows, settings)
    texts, _, seconds = generate_texts(model, tokenizer, rows, prefix, prompting, settings, f"{name} generate")
    outputs, metrics = score_generated(task, [p.references for p in prompts], texts, settings.seed)
    result.metrics["generate"] = with_speed(metrics, len(prompts), prefix_seconds + seconds)
    for prediction, output in zip(result.predictions, outputs):
        prediction["generate"] = output
    return result


def calibration_bias(model, tokenizer, content_free: list[EvalPrompt], choices: list[list[int]],
                     add_special_tokens: bool, settings: EvalSettings) -> torch.Tensor:
    """The choices' log-probabilities the content-free prompts average to (scoring.content_free_bias)."""
    rows = [tokenizer(p.text, add_special_tokens=add_special_tokens)["input_ids"] for p in content_free]
    scores, _ = choice_scores(model, rows, choices, pad_id(tokenizer), None, settings, desc=None)
    return content_free_bias(scores)


def evaluate_prompting(model, tokenizer, prompts: list[EvalPrompt], prompting: PromptingConfig, template: str,
                       use_chat_template: bool, labels: list[str], settings: EvalSettings, name: str,
                       content_free: list[EvalPrompt] = ()) -> PromptingResult:
    """``content_free``: prompts without content (prompting.calibrate), whose answers calibrate choice scoring."""
    add_special_tokens = not use_chat_template  # a chat template writes its own special tokens
    needed = prompting.max_new_tokens if "generate" in prompting.scoring else 0
    rows = tokenize_prompts(prompts, tokenizer, add_special_tokens, needed, context_length(model), template)
    result = PromptingResult(predictions=[{"id": p.id, "label": p.label, "prompt_tokens": len(r)}
                                          for p, r in zip(prompts, rows)])
    prefix, prefix_seconds = timed_shared_prefix(model, rows, settings)
    choices = choice_token_ids(prompts, tokenizer, use_chat_template) if "choice" in prompting.scoring else None
    scores = texts = None
    if "generate" in prompting.scoring:
        # greedy generation's first step reads what choice scoring reads: one pass over the prompts gives both
        one_pass = choices is not None and prompting.samples == 1 and settings.continues_a_cache
        texts, scores, generate_seconds = generate_texts(model, tokenizer, rows, prefix, prompting, settings,
                                                         f"{name} {'choice and ' if one_pass else ''}generate",
                                                         choices if one_pass else None)
        choice_seconds = generate_seconds
    if choices is not None:
        bias = calibration_bias(model, tokenizer, list(content_free), choices, add_special_tokens, settings) \
            if content_free else None
        if scores is None:
            scores, choice_seconds = choice_scores(model, rows, choices, pad_id(tokenizer), prefix, settings,
                                                   f"{name} choice")
        outputs = choice_outputs(prompts, scores, labels, bias)
        result.add("choice", outputs, scoring_metrics(prompts, outputs, labels, prefix_seconds + choice_seconds,
                                                      settings.seed))
        if bias is not None:
            result.metrics["choice"]["calibration_bias"] = dict(zip(prompts[0].choices,
                                                                    (round(p, 4) for p in bias.exp().tolist())))
    if texts is not None:
        outputs = generation_outputs(prompts, texts, labels, prompting)
        result.add("generate", outputs, scoring_metrics(prompts, outputs, labels, prefix_seconds + generate_seconds,
                                                        settings.seed))
    return result


@dataclass(frozen=True)
class Scorer:
    """How one prompting method's rows become a result, for the task of the data."""

    task: Task
    labels: list[str]
    """data.labels (classification); empty for the generative tasks."""
    model: object
    tokenizer: object
    settings: EvalSettings
    embedded: dict = field(default_factory=dict, repr=False, compare=False)
    """Nearest-demonstration vectors already computed with this model (tunelab.evaluation.demonstrations)."""
    scored: dict = field(default_factory=dict, repr=False, compare=False)
    """Results already computed with this model, by rows, template and prompting (scorings aside)."""

    def score(self, rows: list[dict], template: PromptConfig, prompting: PromptingConfig, train: list[dict],
              name: str) -> PromptingResult:
        """``rows`` read through ``template`` as ``prompting`` says, its demonstrations drawn from ``train``.
        Prompts scored before are not scored again: the prompt search's winner is often the plain
        zero-shot prompt, and scoring is deterministic (sampling is seeded per call)."""
        key = repr(([str(row["id"]) for row in rows], template, replace(prompting, scoring=[])))
        earlier = self.scored.get(key)
        if earlier is not None and set(prompting.scoring) <= set(earlier.metrics):
            print(f"evaluate: {name}: the same prompts as scored before ({', '.join(prompting.scoring)}): reused")
            return earlier.only(prompting.scoring)
        score = self.classification if self.task.classifies else self.generation
        result = self.scored[key] = score(rows, template, prompting, train, name)
        return result

    def demonstrations(self, prompting: PromptingConfig, template: PromptConfig, train: list[dict], rows: list[dict]):
        return choose_demonstrations(prompting, template, train, rows, self.labels, self.settings.seed, self.model,
                                     self.tokenizer, self.settings.batch_size, self.embedded)

    def classification(self, rows, template, prompting, train, name) -> PromptingResult:
        content_free = [{"id": f"content-free-{i}", "text": text, "label": self.labels[0]}
                        for i, text in enumerate(CONTENT_FREE)] if prompting.calibrate else []
        shots = self.demonstrations(prompting, template, train, rows + content_free)
        prompts = build_prompts(rows, template, self.labels, self.tokenizer, shots)
        return evaluate_prompting(self.model, self.tokenizer, prompts, prompting, template.name,
                                  template.use_chat_template, self.labels, self.settings, name,
                                  build_prompts(content_free, template, self.labels, self.tokenizer, shots))

    def generation(self, rows, template, prompting, train, name) -> PromptingResult:
        shots = self.demonstrations(prompting, template, train, rows)
        prompts = build_chat_prompts(rows, template, self.tokenizer, shots)
        return evaluate_generated(self.model, self.tokenizer, prompts, prompting, template.name, self.task,
                                  self.settings, name)
