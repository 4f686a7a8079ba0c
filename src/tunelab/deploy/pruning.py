"""Wanda pruning (Sun et al. 2023, "pruning by weights and activations") by torchao's sparsifier.

Each Linear of the decoder layers loses the weights with the smallest |W| times its input
channel's activation norm, the norms calibrated on the first train rows as formatted for
training (prompt and answer). torchao ranks across the whole layer (the paper, per output row)
and scores with the squared norm; for 2:4 it keeps the best two of every four consecutive
input weights. lm_head (tied to the embeddings) and the embeddings are left whole.

The zeros are stored densely: a CPU runs a pruned model exactly as fast as the dense one (2:4
kernels are CUDA-only), so the report shows its accuracy, and neither a smaller file nor a speed-up.
"""

import warnings
from pathlib import Path

from tunelab.io.jsonl import read_jsonl
from tunelab.models.loading import float_model

SEMI_STRUCTURED_BLOCK = 4  # 2:4: two of every four consecutive weights are zero


def pruned_weights(model) -> list[str]:
    """The weights Wanda prunes: every Linear's but the output head."""
    import torch

    return [f"{name}.weight" for name, module in model.named_modules()
            if isinstance(module, torch.nn.Linear) and not name.endswith("lm_head")]


def calibration_rows(recipe: dict) -> list[list[int]]:
    calibration = recipe["calibration"]
    rows = read_jsonl(Path(calibration["file"]), required=("input_ids",))[: calibration["rows"]]
    return [row["input_ids"] for row in rows]


def wanda(model, rows: list[list[int]], sparsity: float, block: int | None = None):
    """``model`` pruned in place by Wanda, its activation norms observed on ``rows`` (one at a time: no padding)."""
    import torch
    from torchao.sparsity import WandaSparsifier

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # "sparsity_level fixed to 50% (2:4)": what 2:4 means
        sparsifier = WandaSparsifier(sparsity_level=sparsity, semi_structured_block_size=block)
    sparsifier.prepare(model, [{"tensor_fqn": name} for name in pruned_weights(model)])
    with torch.no_grad():
        for ids in rows:
            model(input_ids=torch.tensor([ids]))
    sparsifier.step()
    sparsifier.squash_mask()
    return model


def wanda_export(block: int | None):
    """A deployment method's ``make``: unstructured at the recipe's sparsity, or 2:4 (``block`` 4)."""

    def make(merged_dir: Path, target: Path, recipe: dict) -> None:
        model = wanda(float_model(merged_dir), calibration_rows(recipe), recipe["sparsity"], block)
        model.save_pretrained(target)

    return make
