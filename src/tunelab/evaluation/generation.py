"""Generation as a deployed model is used: batched, left-padded, greedy or sampled.

Self-consistency samples several reasoning paths per row and takes the majority answer; the
winning answer's share of the samples is its confidence. Ties go to the choice listed first
(data.labels order), so the vote is deterministic. A prompting scored both by its answer choices
and by greedy generation gets both from one pass over its prompts (generate_and_score).
"""

from collections import Counter
from dataclasses import dataclass

import torch

from tunelab.evaluation.batching import left_pad, pad_id
from tunelab.evaluation.scoring import SharedPrefix, scores_after_prompts


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
    input_ids, mask = _padded(model, tokenizer, prompts, prefix)
    if sampling.samples > 1 and prompt_once:
        cache = _prompt_cache(model, input_ids, mask, prefix, sampling.samples)
    else:
        cache = prefix.cache_for(len(prompts) * sampling.samples) if prefix else None
    output = _generate(model, tokenizer, input_ids, mask, max_new_tokens, cache, samples=sampling.samples,
                       **sampling.generate_kwargs())
    return _texts(tokenizer, output, input_ids.shape[1], sampling.samples)


@torch.no_grad()
def generate_and_score(model, tokenizer, prompts: list[list[int]], max_new_tokens: int, choices: list[list[int]],
                       prefix: SharedPrefix | None = None, normalize: bool = False) -> tuple[list[list[str]], torch.Tensor]:
    """Greedy continuations as ``generate`` writes them, and each choice's log-probability after
    each prompt [prompts, choices] as ``scoring.choice_logprobs`` computes it, from one pass over
    the prompts: the first decoding step's logits are the ones choice scoring reads, and the
    cache cut back to the prompts continues the tails of multi-token choices."""
    input_ids, mask = _padded(model, tokenizer, prompts, prefix)
    output = _generate(model, tokenizer, input_ids, mask, max_new_tokens, prefix.cache_for(len(prompts)) if prefix else None,
                       samples=1, **Sampling().generate_kwargs(), return_dict_in_generate=True, output_logits=True)
    cache = output.past_key_values
    cache.crop(input_ids.shape[1] - cache.get_seq_length())  # a negative count: the generated tokens it drops
    scores = scores_after_prompts(model, output.logits[0], cache, mask.cpu(), choices, pad_id(tokenizer), normalize)
    return _texts(tokenizer, output.sequences, input_ids.shape[1], 1), scores


def _padded(model, tokenizer, prompts: list[list[int]], prefix: SharedPrefix | None) -> tuple[torch.Tensor, torch.Tensor]:
    ids, mask = left_pad(prompts, pad_id(tokenizer), prefix.ids if prefix else ())
    return ids.to(model.device), mask.to(model.device)


def _generate(model, tokenizer, input_ids: torch.Tensor, mask: torch.Tensor, max_new_tokens: int, cache, samples: int,
              **kwargs):
    return model.generate(input_ids=input_ids, attention_mask=mask, max_new_tokens=max_new_tokens,
                          num_return_sequences=samples, pad_token_id=pad_id(tokenizer),
                          eos_token_id=tokenizer.eos_token_id, past_key_values=cache, **kwargs)


def _texts(tokenizer, sequences: torch.Tensor, prompt_width: int, samples: int) -> list[list[str]]:
    texts = tokenizer.batch_decode(sequences[:, prompt_width:], skip_special_tokens=True)
    return [texts[i * samples: (i + 1) * samples] for i in range(len(texts) // samples)]


def majority_vote(answers: list[str | None], choices: list[str]) -> tuple[str | None, float]:
    """The most frequent parsed answer and its share of all samples (unparseable ones included)."""
    counts = Counter(answer for answer in answers if answer is not None)
    if not counts:
        return None, 0.0
    winner = max(choices, key=lambda choice: (counts[choice], -choices.index(choice)))
    return winner, counts[winner] / len(answers)
