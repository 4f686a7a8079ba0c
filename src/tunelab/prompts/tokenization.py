"""Prompt/completion tokenisation with the loss mask, and the report people check before training.

The loss mask marks the completion's tokens (the target and its EOS): the prompt is context,
not something to learn. It is computed here, once, and stored beside the text in
data/formatted, so that the report and the training stage see the same tokens.
"""

from dataclasses import dataclass

import numpy as np

from tunelab.errors import TunelabError


@dataclass(frozen=True)
class TokenizedExample:
    input_ids: list[int]
    completion_mask: list[int]
    """1 where the token carries loss (completion), 0 for prompt tokens."""
    untruncated_length: int
    prompt_length: int

    @property
    def truncated(self) -> bool:
        return self.untruncated_length > len(self.input_ids)


def tokenize_example(tokenizer, prompt: str, completion: str, max_length: int, add_special_tokens: bool) -> TokenizedExample:
    """Tokenise prompt and prompt+completion; the difference is the completion span.

    With a chat template the rendered text already holds any BOS, so special tokens are not
    added again (``add_special_tokens=False``).
    """
    prompt_ids = tokenizer(prompt, add_special_tokens=add_special_tokens)["input_ids"]
    full_ids = tokenizer(prompt + completion, add_special_tokens=add_special_tokens)["input_ids"]
    if full_ids[: len(prompt_ids)] != prompt_ids:
        raise TunelabError(
            "the tokenizer merges the last prompt token with the completion, so the loss mask "
            "would be off; end the prompt with whitespace or a newline"
        )
    mask = [0] * len(prompt_ids) + [1] * (len(full_ids) - len(prompt_ids))
    return TokenizedExample(full_ids[:max_length], mask[:max_length], len(full_ids), len(prompt_ids))


def check_ends_with_eos(example: TokenizedExample, eos_token_id: int, row: str) -> None:
    """Before truncation the completion must end in EOS, or the model never learns to stop."""
    if example.untruncated_length == len(example.input_ids) and example.input_ids[-1] != eos_token_id:
        raise TunelabError(f"row {row}: the completion does not end with the EOS token (id {eos_token_id})")
    if sum(example.completion_mask) == 0 and not example.truncated:
        raise TunelabError(f"row {row}: the completion is empty, nothing would carry loss")


def drop_truncated(formatted: list[tuple[dict, TokenizedExample]]) -> tuple[list[tuple[dict, TokenizedExample]], int]:
    """The examples that fit ``format.max_length`` whole, and how many did not: a truncated
    example's target is cut (its end, its EOS), and training on it would teach the model to stop
    mid-answer, so it is dropped and counted rather than trained on silently."""
    kept = [(row, tokens) for row, tokens in formatted if not tokens.truncated]
    return kept, len(formatted) - len(kept)


def _percentiles(values: list[int]) -> dict[str, float]:
    array = np.asarray(values)
    return {"p50": round(float(np.percentile(array, 50)), 1), "p95": round(float(np.percentile(array, 95)), 1),
            "max": int(array.max())}


def loss_token_share(input_ids: list[list[int]], completion_masks: list[list[int]]) -> float:
    """Share of the (kept) tokens that carry loss: the completions' tokens over all tokens."""
    return sum(map(sum, completion_masks)) / sum(map(len, input_ids))


def last_loss_token(example: TokenizedExample) -> int | None:
    """The last token that carries loss: the EOS of a whole completion (a chat template may write
    more after its end-of-turn token, a newline, which is context)."""
    carrying = [token for token, loss in zip(example.input_ids, example.completion_mask) if loss]
    return carrying[-1] if carrying else None


def length_report(examples: list[TokenizedExample], max_length: int, tokenizer) -> dict:
    """Token lengths, truncation, the share of tokens that carry loss, the share whose loss ends at EOS."""
    masks = [e.completion_mask for e in examples]
    return {
        "examples": len(examples),
        "tokens": _percentiles([e.untruncated_length for e in examples]),
        "prompt_tokens": _percentiles([e.prompt_length for e in examples]),
        "max_length": max_length,
        "truncated_share": sum(e.truncated for e in examples) / len(examples),
        "loss_token_share": loss_token_share([e.input_ids for e in examples], masks),
        "loss_tokens": sum(map(sum, masks)),
        "eos_at_end_share": sum(last_loss_token(e) == tokenizer.eos_token_id for e in examples) / len(examples),
    }


def special_tokens_report(tokenizer) -> dict:
    """pad == eos is common (SmolLM2); it is safe because the loss mask comes from the
    completion span, not from ``input_ids != pad_token_id``, so the EOS still carries loss."""
    return {
        "eos_token": tokenizer.eos_token,
        "eos_token_id": tokenizer.eos_token_id,
        "pad_token": tokenizer.pad_token,
        "pad_token_id": tokenizer.pad_token_id,
        "pad_equals_eos": tokenizer.pad_token_id == tokenizer.eos_token_id,
        "loss_mask_from": "completion span (not pad positions), so EOS is trained even when pad == eos",
    }


def _chat_ids(tokenizer, messages: list[dict], generation_prompt: bool = False) -> list[int]:
    text = tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=generation_prompt)
    return tokenizer(text, add_special_tokens=False)["input_ids"]  # the template writes its own special tokens


def tokenize_conversation(tokenizer, messages: list[dict], max_length: int, row: str) -> TokenizedExample:
    """A whole chat through the model's chat template, with loss on every assistant turn and its
    end-of-turn token, nothing else (system and user turns, role headers and the template's text
    after the end-of-turn token are context).

    An assistant turn's tokens are what rendering the chat through that turn adds to rendering it
    up to the turn's generation prompt. TRL's ``assistant_only_loss`` needs ``{% generation %}``
    markers that most templates (SmolLM2's among them) lack, so the spans are found this way,
    and refused where a template renders earlier turns differently once later ones follow.
    """
    full = _chat_ids(tokenizer, messages)
    mask = [0] * len(full)
    first_loss = None
    for turn, message in enumerate(messages):
        if message["role"] != "assistant":
            continue
        before = _chat_ids(tokenizer, messages[:turn], generation_prompt=True)
        through = _chat_ids(tokenizer, messages[: turn + 1])
        if through[: len(before)] != before or full[: len(through)] != through:
            raise TunelabError(f"row {row}: the chat template renders turn {turn + 1} differently once later turns "
                               "follow it, so its loss mask cannot be found; train on single-turn rows")
        start, span = len(before), through[len(before):]
        if tokenizer.eos_token_id not in span:
            raise TunelabError(f"row {row}: assistant turn {turn + 1} does not end with the end-of-turn token "
                               f"{tokenizer.eos_token!r} in the chat template")
        end = start + len(span) - span[::-1].index(tokenizer.eos_token_id)  # through the turn's last end-of-turn token
        mask[start:end] = [1] * (end - start)
        first_loss = start if first_loss is None else first_loss
    if first_loss is None:
        raise TunelabError(f"row {row}: no assistant turn, nothing would carry loss")
    return TokenizedExample(full[:max_length], mask[:max_length], len(full), first_loss)
