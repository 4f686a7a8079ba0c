"""Batches of token rows for the model: left padding, the pad id, fixed-size chunks.

Left padding puts every row's last token at the same position, where the next-token logit
(choice scoring) or generation starts. Rows may follow a shared ``head`` (a cached prefix): the
padding then sits between head and row, and position ids counted over the mask keep each row
at the positions it would have alone.
"""

from collections.abc import Iterator, Sequence

import torch


def pad_id(tokenizer) -> int:
    """The tokenizer's pad token, or EOS where it has none (the mask hides it either way)."""
    return tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id


def left_pad(rows: list[list[int]], pad: int, head: Sequence[int] = ()) -> tuple[torch.Tensor, torch.Tensor]:
    """input_ids and attention_mask of ``head + padding + row`` for every row."""
    width = max(len(row) for row in rows)
    head = list(head)
    ids = torch.tensor([head + [pad] * (width - len(row)) + row for row in rows])
    mask = torch.tensor([[1] * len(head) + [0] * (width - len(row)) + [1] * len(row) for row in rows])
    return ids, mask


def batches(items: list, size: int) -> Iterator[list]:
    for start in range(0, len(items), size):
        yield items[start:start + size]
