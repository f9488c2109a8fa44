"""The loss registry. Every loss maps (student logits, batch) to named parts (`LossTerms`)."""

from __future__ import annotations

from dataclasses import dataclass, field

import torch

from kdcore.registry import Registry

LOSSES: Registry = Registry("loss")


@dataclass
class LossTerms:
    """The total that is optimised, and its named parts for logging (already weighted)."""

    total: torch.Tensor
    parts: dict[str, torch.Tensor] = field(default_factory=dict)


from kdcore.losses import dkd, hinton  # noqa: E402,F401  (registers the losses)
