"""Pixel transforms on batches of normalised images."""

from __future__ import annotations

import torch
import torch.nn.functional as F


def normalise(images: torch.Tensor, mean: torch.Tensor, std: torch.Tensor) -> torch.Tensor:
    """(N, C, H, W) in [0, 1] -> zero mean, unit variance per channel with the given statistics."""
    return (images - mean.view(1, -1, 1, 1)) / std.view(1, -1, 1, 1)


def shift_images(x: torch.Tensor, dx: torch.Tensor, dy: torch.Tensor, fill: torch.Tensor) -> torch.Tensor:
    """Moves each image's content by (dx, dy) pixels (right, down), filling the border with `fill`.

    x: (N, C, H, W); dx, dy: (N,) integers; fill: (C,), the normalised value of a black pixel.
    """
    n, c, h, w = x.shape
    if n == 0:
        return x
    s = int(max(dx.abs().max().item(), dy.abs().max().item()))
    if s == 0:
        return x
    padded = F.pad(x - fill.view(1, -1, 1, 1), (s, s, s, s)) + fill.view(1, -1, 1, 1)  # (N, C, H+2s, W+2s)
    rows = torch.arange(h).view(1, h) + s - dy.view(n, 1)  # (N, H)
    cols = torch.arange(w).view(1, w) + s - dx.view(n, 1)  # (N, W)
    flat = (rows.view(n, h, 1) * (w + 2 * s) + cols.view(n, 1, w)).view(n, 1, h * w).expand(n, c, h * w)
    return padded.view(n, c, -1).gather(2, flat).view(n, c, h, w)  # one gather: each pixel copied once


def random_shifts(n: int, max_shift: int, generator: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
    """Independent uniform integer shifts in [-max_shift, max_shift] for x and y."""
    dx = torch.randint(-max_shift, max_shift + 1, (n,), generator=generator)
    dy = torch.randint(-max_shift, max_shift + 1, (n,), generator=generator)
    return dx, dy
