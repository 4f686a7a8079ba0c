"""Generation as a deployed model is used: batched, left-padded, greedy or sampled.

Self-consistency samples several reasoning paths per row and takes the majority answer; the
winning answer's share of the samples is its confidence. Ties go to the choice listed first
(data.labels order), so the vote is deterministic.
"""

from collections import Counter
from dataclasses import dataclass

import torch

from tunelab.evaluation.batching import left_pad, pad_id
from tunelab.evaluation.scoring import SharedPrefix


@dataclass(frozen=True)
class Sampling:
    """samples == 1 is greedy decoding; more draws that many paths per prompt."""

    samples: int = 1
    temperature: float = 1.0
    top_k: int = 0
    """0 keeps the whole vocabulary (top_k is much cheaper than top_p on a CPU: no full sort)."""
    top_p: float = 1.0

    def generate_kwargs(self) -> dict:
        if self.samples == 1:
            return {"do_sample": False, "temperature": None, "top_p": None, "top_k": None}
        return {"do_sample": True, "temperature": self.temperature, "top_k": self.top_k, "top_p": self.top_p}


def _prompt_cache(model, input_ids: torch.Tensor, mask: torch.Tensor, prefix: SharedPrefix | None, copies: int):
    """Run each prompt once (all but its last token) and copy the cache for every sample, so
    n samples do not compute the same prompt n times; generate then starts at the last token."""
    start = len(prefix.ids) if prefix else 0
    cache = prefix.cache_for(len(input_ids)) if prefix else None
    if input_ids.shape[1] - 1 > start:
        positions = (mask[:, :-1].cumsum(-1) - 1).clamp(min=0)[:, start:]
        cache = model(input_ids=input_ids[:, start:-1], attention_mask=mask[:, :-1], position_ids=positions,
                      past_key_values=cache, use_cache=True, logits_to_keep=1).past_key_values
    if cache is not None:
        cache.batch_repeat_interleave(copies)
    return cache


@torch.no_grad()
def generate(model, tokenizer, prompts: list[list[int]], max_new_tokens: int, sampling: Sampling = Sampling(),
             prefix: SharedPrefix | None = None, prompt_once: bool = True) -> list[list[str]]:
    """For each prompt (token ids after the ``prefix``), ``sampling.samples`` continuations as text.

    Rows are left-padded after the prefix (see batching.py); generate counts position ids over
    the attention mask, so each row sees the positions it would have alone.
    ``prompt_once=False`` lets generate run each sample's prompt itself (PEFT prompt learning).
    """
    pad = pad_id(tokenizer)
    input_ids, mask = (tensor.to(model.device) for tensor in left_pad(prompts, pad, prefix.ids if prefix else ()))
    if sampling.samples > 1 and prompt_once:
        cache = _prompt_cache(model, input_ids, mask, prefix, sampling.samples)
    else:
        cache = prefix.cache_for(len(prompts) * sampling.samples) if prefix else None
    output = model.generate(input_ids=input_ids, attention_mask=mask, max_new_tokens=max_new_tokens,
                            num_return_sequences=sampling.samples, pad_token_id=pad, eos_token_id=tokenizer.eos_token_id,
                            past_key_values=cache, **sampling.generate_kwargs())
    texts = tokenizer.batch_decode(output[:, input_ids.shape[1]:], skip_special_tokens=True)
    return [texts[i * sampling.samples: (i + 1) * sampling.samples] for i in range(len(prompts))]


def majority_vote(answers: list[str | None], choices: list[str]) -> tuple[str | None, float]:
    """The most frequent parsed answer and its share of all samples (unparseable ones included)."""
    counts = Counter(answer for answer in answers if answer is not None)
    if not counts:
        return None, 0.0
    winner = max(choices, key=lambda choice: (counts[choice], -choices.index(choice)))
    return winner, counts[winner] / len(answers)
