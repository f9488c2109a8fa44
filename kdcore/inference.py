"""Batched forward passes without gradients."""

from __future__ import annotations

import math

import torch
from torch import nn

INPUT_BYTES = 16 << 20  # a forward pass without gradients takes at most this much float32 input at once


def rows_per_pass(sample_shape, cap: int, budget: int | None = None) -> int:
    """How many samples of `sample_shape` make one pass: `cap` for small samples (digits: unchanged),
    fewer for large ones (224x224 RGB: 27 on the CPU), so memory follows the budget, not the data set.
    The budget defaults to the stage's (params gpu.inference_mib on CUDA, INPUT_BYTES otherwise)."""
    if budget is None:
        from kdcore.runtime import accel

        budget = accel().input_bytes
    return max(1, min(cap, budget // (4 * math.prod(sample_shape))))


def render_budget() -> int:
    """Bytes of float32 views rendered at once for a teacher's pass: 8 x INPUT_BYTES, or one GPU pass."""
    from kdcore.runtime import accel

    return max(8 * INPUT_BYTES, accel().input_bytes)


@torch.no_grad()
def predict_logits(
    model: nn.Module, x: torch.Tensor, device: torch.device | str = "cpu", batch_size: int = 1024
) -> torch.Tensor:
    """(N, C, H, W) -> (N, classes) logits on the CPU, model in eval mode. `x` may be read on demand
    (anything sliced like a tensor); at most `batch_size` samples, and INPUT_BYTES, per pass."""
    from kdcore.runtime import accel, autocast

    was_training = model.training
    model.eval()
    step = rows_per_pass(tuple(x.shape[1:]), batch_size if accel().input_bytes <= INPUT_BYTES else 8 * batch_size)
    device = torch.device(device)
    layout = torch.channels_last if accel().channels_last and x.ndim == 4 else torch.contiguous_format
    with autocast(device):
        out = [model(x[i : i + step].to(device, memory_format=layout)).float().cpu() for i in range(0, len(x), step)]
    model.train(was_training)
    if not out:
        return torch.empty(0, 0)
    return torch.cat(out)
