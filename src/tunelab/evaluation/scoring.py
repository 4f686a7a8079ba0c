"""Answer-choice likelihood: how likely the model finds each choice after the prompt.

Exact and parse-free: the predicted label is the choice with the highest log-probability.
``normalize=True`` divides each choice's summed log-probability by its token count, so a
choice is not penalised for being tokenised into more pieces (lm-evaluation-harness's
``acc_norm`` normalises by characters instead; per-token is what a model's loss sees).

Where the compute goes, and how it is saved (CPU evaluation is dominated by the forward pass
and by the vocabulary projection):

- few-shot prompts share their demonstrations: a :class:`SharedPrefix` runs them once, and
  its key/value cache is reused for every batch;
- each row runs once, not once per choice: the row's last logit scores every choice's first
  token, and only the remaining tokens of multi-token choices run again, from the row's cache;
- only the logits that score something are projected onto the vocabulary;
- a prompting scored by choice and by greedy generation runs its prompts once: generation's
  first step gives the logits choice scoring reads (generation.generate_and_score).

Rows are left-padded with explicit position ids, so a padded row sees exactly the positions
it would see alone. PEFT prompt/prefix tuning adds its own tokens on every forward call and
cannot continue a cache: :func:`choice_logprobs_one_pass` scores those models the plain way.
"""

import copy

import torch

from tunelab.evaluation.batching import left_pad

CONTENT_FREE = ("N/A", "", "[MASK]")
"""Contextual calibration's content-free inputs (Zhao et al., 2021, "Calibrate before use"): what
the model answers when there is nothing to judge is its bias under this prompt."""


def content_free_bias(scores: torch.Tensor) -> torch.Tensor:
    """[choices]: the log of each choice's probability (normalised over the choices) averaged
    over the content-free inputs' ``scores`` [inputs, choices]."""
    return torch.log_softmax(scores.float(), dim=1).exp().mean(0).log()


def calibrated(scores: torch.Tensor, bias: torch.Tensor) -> torch.Tensor:
    """Choice scores with the bias divided out of their probabilities: p(choice | row) / p(choice | content-free)."""
    return scores - bias


def common_prefix_length(sequences: list[list[int]]) -> int:
    """Length of the token prefix all sequences share, leaving each at least one own token."""
    shortest = min(len(sequence) for sequence in sequences)
    length = 0
    while length < shortest - 1 and all(sequence[length] == sequences[0][length] for sequence in sequences):
        length += 1
    return length


class SharedPrefix:
    """Token ids that every prompt starts with, and their key/value cache, computed once."""

    def __init__(self, model, ids: list[int]):
        self.ids = ids
        with torch.no_grad():
            self._cache = model(input_ids=torch.tensor([ids], device=model.device), use_cache=True,
                                logits_to_keep=1).past_key_values

    def cache_for(self, batch: int):
        """A copy for one batch: the forward pass extends its cache in place."""
        cache = copy.deepcopy(self._cache)
        cache.batch_repeat_interleave(batch)
        return cache


def _check(rows: list[list[int]], choices: list[list[int]]) -> None:
    if not rows or any(not row for row in rows) or any(not choice for choice in choices):
        raise ValueError("every row and every choice needs at least one token")


@torch.no_grad()
def choice_logprobs(model, rows: list[list[int]], choices: list[list[int]], pad_id: int,
                    prefix: SharedPrefix | None = None, normalize: bool = False) -> torch.Tensor:
    """Log-probability of each choice after each row: a tensor [rows, choices].

    ``rows`` are token ids of each prompt (after the ``prefix``, if any); every row is scored
    against the same ``choices`` (token ids of each answer choice).
    """
    _check(rows, choices)
    device, start = model.device, len(prefix.ids) if prefix else 0
    ids, row_mask = left_pad(rows, pad_id)
    positions = start + (row_mask.cumsum(1) - 1).clamp(min=0)
    mask = torch.cat([torch.ones((len(rows), start), dtype=torch.long), row_mask], dim=1)
    output = model(input_ids=ids.to(device), attention_mask=mask.to(device), position_ids=positions.to(device),
                   past_key_values=prefix.cache_for(len(rows)) if prefix else None, use_cache=True, logits_to_keep=1)
    return scores_after_prompts(model, output.logits[:, -1], output.past_key_values, mask, choices, pad_id, normalize)


def scores_after_prompts(model, next_logits: torch.Tensor, cache, mask: torch.Tensor, choices: list[list[int]],
                         pad_id: int, normalize: bool = False) -> torch.Tensor:
    """[rows, choices] from what a pass over the prompts left: the logits after each row's last
    token, and the cache of exactly the prompts (``mask`` over its positions), which the tails of
    multi-token choices continue. Choice scoring's own pass and greedy generation's first step
    both leave these."""
    first = torch.log_softmax(next_logits.float(), dim=-1).cpu()
    scores = first[:, [choice[0] for choice in choices]]
    if any(len(choice) > 1 for choice in choices):
        scores += _choice_tails(model, cache, mask, mask.sum(1), choices, pad_id)
    if normalize:
        scores /= torch.tensor([len(choice) for choice in choices], dtype=scores.dtype)
    return scores


def _choice_tails(model, cache, mask: torch.Tensor, ends: torch.Tensor, choices: list[list[int]], pad_id: int) -> torch.Tensor:
    """Summed log-probabilities of every choice token after the first, continuing each row's cache."""
    rows, count = mask.shape[0], len(choices)
    tails = [choice[:-1] for choice in choices]  # choice token k is predicted at tail position k - 1
    width = max(len(tail) for tail in tails)
    cache.batch_repeat_interleave(count)
    ids = torch.full((rows * count, width), pad_id, dtype=torch.long)
    tail_mask = torch.zeros((rows * count, width), dtype=torch.long)
    for c, tail in enumerate(tails):
        ids[c::count, : len(tail)] = torch.tensor(tail)
        tail_mask[c::count, : len(tail)] = 1
    positions = ends.repeat_interleave(count)[:, None] + torch.arange(width)[None, :]
    full_mask = torch.cat([mask.repeat_interleave(count, dim=0), tail_mask], dim=1)
    device = model.device
    logits = model(input_ids=ids.to(device), attention_mask=full_mask.to(device), position_ids=positions.to(device),
                   past_key_values=cache).logits
    log_probs = torch.log_softmax(logits.float(), dim=-1).cpu()
    scores = torch.zeros((rows, count))
    for c, choice in enumerate(choices):
        for k in range(1, len(choice)):
            scores[:, c] += log_probs[c::count, k - 1, choice[k]]
    return scores


@torch.no_grad()
def choice_logprobs_one_pass(model, rows: list[list[int]], choices: list[list[int]], pad_id: int,
                             normalize: bool = False) -> torch.Tensor:
    """The plain computation: one right-padded sequence per (row, choice), all logits projected.

    Slower, but it asks nothing of the model beyond a forward pass, so PEFT prompt learning
    (which inserts virtual tokens) is scored this way.
    """
    _check(rows, choices)
    sequences = [row + choice for row in rows for choice in choices]
    spans = [(len(row), len(row) + len(choice)) for row in rows for choice in choices]
    width = max(len(sequence) for sequence in sequences)
    ids = torch.tensor([sequence + [pad_id] * (width - len(sequence)) for sequence in sequences])
    mask = torch.tensor([[1] * len(sequence) + [0] * (width - len(sequence)) for sequence in sequences])
    logits = model(input_ids=ids.to(model.device), attention_mask=mask.to(model.device)).logits
    # PEFT prompt tuning puts its virtual tokens before the input, and returns their logits too
    logits = logits[:, logits.shape[1] - width:].cpu()
    scores = torch.empty(len(sequences))
    for i, (begin, end) in enumerate(spans):
        # the token at position t is predicted by the logits at t - 1
        log_probs = torch.log_softmax(logits[i, begin - 1 : end - 1].float(), dim=-1)
        total = log_probs.gather(1, ids[i, begin:end, None]).sum()
        scores[i] = total / (end - begin) if normalize else total
    return scores.view(len(rows), len(choices))
