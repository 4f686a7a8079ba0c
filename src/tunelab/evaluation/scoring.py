"""Answer-choice likelihood: how likely the model finds each choice after the prompt.

Exact and parse-free: the predicted label is the choice with the highest log-probability.
``normalize=True`` divides each choice's summed log-probability by its token count, so a
choice is not penalised for being tokenised into more pieces (lm-evaluation-harness's
``acc_norm`` normalises by characters instead; per-token is what a model's loss sees).

Few-shot prompts share their demonstrations: a :class:`SharedPrefix` runs them once, and its
key/value cache is reused for every batch, so only the rows' own tokens and the choices are
computed.
"""

import copy

import torch


def _choice_sequences(row_ids: list[int], choices: list[list[int]]) -> tuple[list[list[int]], list[tuple[int, int]]]:
    """One sequence per choice (row + choice) and the span of the choice's tokens in it."""
    sequences, spans = [], []
    for choice in choices:
        sequences.append(row_ids + choice)
        spans.append((len(row_ids), len(row_ids) + len(choice)))
    return sequences, spans


class SharedPrefix:
    """Token ids that every prompt starts with, and their key/value cache, computed once."""

    def __init__(self, model, ids: list[int]):
        self.ids = ids
        with torch.no_grad():
            self._cache = model(input_ids=torch.tensor([ids]), use_cache=True).past_key_values

    def cache_for(self, batch: int):
        """A copy for one batch: the forward pass extends its cache in place."""
        cache = copy.deepcopy(self._cache)
        cache.batch_repeat_interleave(batch)
        return cache


@torch.no_grad()
def choice_logprobs(model, rows: list[list[int]], choices: list[list[int]], pad_id: int,
                    prefix: SharedPrefix | None = None, normalize: bool = False) -> torch.Tensor:
    """Log-probability of each choice after each row: a tensor [rows, choices].

    ``rows`` are token ids of each prompt (after the ``prefix``, if any); every row is scored
    against the same ``choices`` (token ids of each answer choice).
    """
    if not rows or any(not row for row in rows) or any(not choice for choice in choices):
        raise ValueError("every row and every choice needs at least one token")
    sequences, spans = [], []
    for row in rows:
        row_sequences, row_spans = _choice_sequences(row, choices)
        sequences += row_sequences
        spans += row_spans
    width = max(len(s) for s in sequences)
    input_ids = torch.full((len(sequences), width), pad_id, dtype=torch.long)
    mask = torch.zeros((len(sequences), width), dtype=torch.long)
    for i, sequence in enumerate(sequences):  # right padding: real tokens keep their positions
        input_ids[i, : len(sequence)] = torch.tensor(sequence)
        mask[i, : len(sequence)] = 1
    kwargs = {}
    if prefix is not None:
        kwargs["past_key_values"] = prefix.cache_for(len(sequences))
        mask = torch.cat([torch.ones((len(sequences), len(prefix.ids)), dtype=torch.long), mask], dim=1)
    logits = model(input_ids=input_ids, attention_mask=mask, **kwargs).logits.float()
    log_probs = torch.log_softmax(logits, dim=-1)
    scores = torch.empty(len(sequences))
    for i, (start, end) in enumerate(spans):
        # the token at position t is predicted by the logits at t - 1 (the prefix's last logit
        # predicts the first row token, which is never a choice token: rows are never empty)
        targets = input_ids[i, start:end]
        total = log_probs[i, start - 1 : end - 1].gather(1, targets[:, None]).sum()
        scores[i] = total / (end - start) if normalize else total
    return scores.view(len(rows), len(choices))
