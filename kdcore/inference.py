"""Batched forward passes without gradients."""

from __future__ import annotations

import math

import torch
from torch import nn

INPUT_BYTES = 16 << 20  # a forward pass without gradients takes at most this much float32 input at once


def rows_per_pass(sample_shape, cap: int, budget: int = INPUT_BYTES) -> int:
    """How many samples of `sample_shape` make one pass: `cap` for small samples (digits: unchanged),
    fewer for large ones (224x224 RGB: 27), so memory follows the budget, not the data set."""
    return max(1, min(cap, budget // (4 * math.prod(sample_shape))))


@torch.no_grad()
def predict_logits(
    model: nn.Module, x: torch.Tensor, device: torch.device | str = "cpu", batch_size: int = 1024
) -> torch.Tensor:
    """(N, C, H, W) -> (N, classes) logits on the CPU, model in eval mode. `x` may be read on demand
    (anything sliced like a tensor); at most `batch_size` samples, and INPUT_BYTES, per pass."""
    was_training = model.training
    model.eval()
    step = rows_per_pass(tuple(x.shape[1:]), batch_size)
    out = [model(x[i : i + step].to(device)).float().cpu() for i in range(0, len(x), step)]
    model.train(was_training)
    if not out:
        return torch.empty(0, 0)
    return torch.cat(out)
