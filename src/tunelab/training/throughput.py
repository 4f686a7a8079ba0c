"""How fast training runs, in the units people compare: tokens/s, MFU, peak memory.

Definitions (docs/training.md repeats them):
- tokens/s counts real tokens: the attention mask's ones, no padding, summed over processes.
- FLOPs per token = 2·N (forward) + 2·N (backward through activations) + 2·N_trainable (weight
  gradients), N being the multiply-accumulates of the linear layers (lm_head included, the
  embedding lookup not). Full fine-tuning gives the usual 6N; a frozen base about 4N.
  Attention's own score/value products are left out (small at 128 tokens).
- MFU = achieved FLOP/s ÷ the peak measured in the same process: an fp32 2048² matmul on CPU,
  a bf16 8192² matmul on CUDA. A quiet machine's figure; other load lowers both.
"""

import time

import torch


def linear_macs(model) -> int:
    """Multiply-accumulates per token of every linear layer (works for 4-bit layers too)."""
    return sum(m.in_features * m.out_features for m in model.modules() if isinstance(m, torch.nn.Linear))


def trainable_parameters(model) -> int:
    return sum(p.numel() for p in model.parameters() if p.requires_grad)


def total_parameters(model) -> int:
    return sum(p.numel() for p in model.parameters())


def flops_per_token(model) -> float:
    macs = linear_macs(model)
    # Weight gradients cost 2 FLOPs per trainable weight used in a matmul. Full fine-tuning's
    # trainable count also holds norms and the (tied) embedding, which add no matmul work, so it
    # is capped at the linear layers' size: full gives exactly 6N.
    return 2 * macs + 2 * macs + 2 * min(trainable_parameters(model), macs)


def measure_matmul_peak(repeats: int = 10) -> float:
    """Peak FLOP/s of one matmul on this process's device, best of ``repeats``."""
    cuda = torch.cuda.is_available()
    size, dtype, device = (8192, torch.bfloat16, "cuda") if cuda else (2048, torch.float32, "cpu")
    a = torch.randn(size, size, dtype=dtype, device=device)
    b = torch.randn(size, size, dtype=dtype, device=device)
    best = float("inf")
    for _ in range(repeats + 1):  # the first is a warm-up
        if cuda:
            torch.cuda.synchronize()
        start = time.perf_counter()
        a @ b
        if cuda:
            torch.cuda.synchronize()
        best = min(best, time.perf_counter() - start)
    return 2 * size**3 / best
