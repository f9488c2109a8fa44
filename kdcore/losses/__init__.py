"""The loss registries. Every loss maps (student logits, batch) to named parts (`LossTerms`).

`LOSSES` holds the response losses (functions of the logits), `features.FEATURE_LOSSES` those of
intermediate layers, and `TERMS` the schema of each distill.terms entry (a `kdcore.schema.Term`
subclass, defined beside its loss): params validation, the objective and the docs read the term
names from `TERMS`. A new loss is one module here (loss, schema, both registered) and its import
below.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch

from kdcore.registry import Registry

LOSSES: Registry = Registry("loss")
TERMS: Registry = Registry("loss term")


@dataclass
class LossTerms:
    """The total that is optimised, and its named parts for logging (already weighted)."""

    total: torch.Tensor
    parts: dict[str, torch.Tensor] = field(default_factory=dict)


# each module registers its losses and term schemas
from kdcore.losses import dkd, features, hinton  # noqa: E402,F401
