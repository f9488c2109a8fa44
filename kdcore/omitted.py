"""Omitted-class bias correction (Hinton, Vinyals & Dean 2015, "Distilling the Knowledge in a Neural
Network", section 3).

A student distilled on a transfer set with no example of class c has still learned c from the
soft labels: the teacher's probability of c on the other classes' images ("this 7 looks a bit like
a 3"). Its output for c is too low overall, because no transfer image had c as its most probable
class; raising the bias of c's logit by a constant b recovers most of it (the paper: 98.6% of test
3s correct with b = 3.5). With z the student's logits, the corrected student outputs
z + b * 1[c in omitted], the same network with b added to the output layer's bias.

b is chosen on the validation split, never the test split: the value of the grid 0, 0.25, ..., 10
with the highest validation accuracy (the smallest such b on ties), and the corrected student is
shipped only if its validation accuracy is higher than the uncorrected one's. Both are reported.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import torch
from torch import nn

from kdcore.errors import ConfigError

GRID = tuple(i * 0.25 for i in range(41))  # 0, 0.25, ..., 10


def output_layer(model: nn.Module, num_classes: int) -> nn.Linear:
    """The layer whose outputs are the logits: the last Linear with one output per class and a bias."""
    last = None
    for module in model.modules():
        if isinstance(module, nn.Linear) and module.out_features == num_classes and module.bias is not None:
            last = module
    if last is None:
        raise ConfigError(
            f"distill.omitted_bias: {type(model).__name__} has no Linear output layer with a bias and "
            f"{num_classes} outputs to correct; set distill.omitted_bias: off"
        )
    return last


def shifted(logits: torch.Tensor, omitted: list[int], bias: float) -> torch.Tensor:
    """Logits with `bias` added to the omitted classes' columns (what the corrected student outputs)."""
    out = logits.clone()
    out[:, omitted] += bias
    return out


def accuracy(logits: torch.Tensor, labels: torch.Tensor) -> float:
    return float((logits.argmax(1) == labels).float().mean()) if len(labels) else float("nan")


@dataclass(frozen=True)
class BiasChoice:
    """What the correction did: the classes, the bias, where it was chosen, and whether it shipped."""

    classes: list[str]
    bias: float
    chosen_on: str  # "validation" | "params"
    val_accuracy_uncorrected: float | None
    val_accuracy_corrected: float | None
    shipped: bool

    def as_dict(self) -> dict:
        return asdict(self)


def choose_bias(
    val_logits: torch.Tensor, val_labels: torch.Tensor, omitted: list[int], grid: tuple[float, ...] = GRID
) -> tuple[float, float, float]:
    """(bias, validation accuracy without it, with it): the grid's best bias on the validation split."""
    scores = [accuracy(shifted(val_logits, omitted, b), val_labels) for b in grid]
    best = max(range(len(grid)), key=lambda i: (scores[i], -i))  # the smallest bias among the best
    return grid[best], scores[0], scores[best]


def apply_bias(model: nn.Module, num_classes: int, omitted: list[int], bias: float) -> None:
    """Adds `bias` to the omitted classes' entries of the output layer's bias, in place."""
    layer = output_layer(model, num_classes)
    with torch.no_grad():
        layer.bias[omitted] += bias
