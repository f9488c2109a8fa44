"""Ensemble soft labels from several teachers.

Each method maps K teachers' logits on the same views, (K, V, classes), to one set of ensemble
logits (V, classes). The result is the log of the combined probabilities, so softmax recovers them
exactly and the distillation losses treat the ensemble like a single teacher (at temperature 1).

- mean: p = (1/K) sum_k p_k, the average of probabilities (not of logits).
- weights: p = sum_k w_k p_k with fixed weights, normalised to sum to 1.
- confidence: per sample, w_k proportional to exp(-H(p_k) / tau), so a teacher that is more certain
  about this sample (lower entropy) weighs more.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from kdcore.errors import ConfigError

METHODS = ("mean", "weights", "confidence")


def entropy(probs: torch.Tensor) -> torch.Tensor:
    """Shannon entropy (nats) over the last dimension."""
    return -(probs * probs.clamp_min(1e-12).log()).sum(-1)


def ensemble_weights(
    probs: torch.Tensor, method: str, weights: list[float] | None = None, tau: float = 1.0
) -> torch.Tensor:
    """(K, V) non-negative weights summing to 1 over the teachers for every view."""
    k, v, _ = probs.shape
    if method == "mean":
        return torch.full((k, v), 1.0 / k, dtype=probs.dtype)
    if method == "weights":
        if weights is None or len(weights) != k:
            raise ConfigError(f"transfer.ensemble.weights: need one weight per teacher ({k}), got {weights}")
        w = torch.tensor(weights, dtype=probs.dtype)
        if (w < 0).any() or w.sum() <= 0:
            raise ConfigError(f"transfer.ensemble.weights: must be non-negative with a positive sum, got {weights}")
        return (w / w.sum())[:, None].expand(k, v)
    if method == "confidence":
        return F.softmax(-entropy(probs) / tau, dim=0)  # (K, V): lower entropy, larger weight
    raise ConfigError(f"transfer.ensemble.method: unknown {method!r}; known: {', '.join(METHODS)}")


def combine_logits(
    teacher_logits: torch.Tensor, method: str = "mean", weights: list[float] | None = None, tau: float = 1.0
) -> torch.Tensor:
    """(K, V, classes) logits of K teachers -> (V, classes) ensemble logits (log-probabilities)."""
    if teacher_logits.ndim != 3:
        raise ValueError(f"expected (teachers, views, classes), got shape {tuple(teacher_logits.shape)}")
    probs = F.softmax(teacher_logits.double(), dim=-1)  # (K, V, classes)
    w = ensemble_weights(probs, method, weights, tau)  # (K, V)
    mixed = (w[..., None] * probs).sum(0)  # (V, classes)
    return mixed.clamp_min(1e-12).log().to(teacher_logits.dtype)


class Ensemble(nn.Module):
    """Several trained models as one: forward returns `combine_logits` of the members' logits."""

    def __init__(
        self, members: list[nn.Module], method: str = "mean", weights: list[float] | None = None, tau: float = 1.0
    ) -> None:
        super().__init__()
        self.members = nn.ModuleList(members)
        self.method, self.weights, self.tau = method, weights, tau

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        logits = torch.stack([member(x) for member in self.members])  # (members, batch, classes)
        return combine_logits(logits, self.method, self.weights, self.tau)


def as_one_teacher(
    members: dict[str, nn.Module], method: str, weights: list[float] | None = None, tau: float = 1.0
) -> nn.Module:
    """What the students learned from: the one teacher, or the teachers' ensemble as build_transfer combined them."""
    if len(members) == 1:
        return next(iter(members.values()))
    return Ensemble(list(members.values()), method, weights, tau)
