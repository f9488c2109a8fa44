"""Batched forward passes without gradients."""

from __future__ import annotations

import torch
from torch import nn


@torch.no_grad()
def predict_logits(
    model: nn.Module, x: torch.Tensor, device: torch.device | str = "cpu", batch_size: int = 1024
) -> torch.Tensor:
    """(N, C, H, W) -> (N, classes) logits on the CPU, model in eval mode."""
    was_training = model.training
    model.eval()
    out = [model(x[i : i + batch_size].to(device)).float().cpu() for i in range(0, len(x), batch_size)]
    model.train(was_training)
    if not out:
        return torch.empty(0, 0)
    return torch.cat(out)
