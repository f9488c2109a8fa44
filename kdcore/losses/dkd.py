"""Decoupled knowledge distillation (Zhao, Cui, Song, Qiu, Liang 2022, "Decoupled Knowledge Distillation").

Hinton's KL splits into a target-class part (TCKD: the binary "target vs rest" distributions) and a
non-target part (NCKD: the distribution among the other classes). DKD weights them separately:

    DKD = T^2 * (alpha * KL(b_t || b_s) + beta * KL(p~_t || p~_s))

b = (p_y, 1 - p_y) with p = softmax(z / T); p~ = softmax over the non-target logits only.
Samples without a label take the teacher's prediction as their target class.
"""

from __future__ import annotations

from typing import Any, ClassVar, Literal

import torch
import torch.nn.functional as F
from pydantic import NonNegativeFloat

from kdcore.losses import LOSSES, TERMS, LossTerms
from kdcore.losses.hinton import UNLABELED, masked_cross_entropy
from kdcore.schema import Term

_MASK = 1e4  # subtracted from the target logit: its probability among the non-targets becomes ~0


def _binary_log_probs(logits: torch.Tensor, target: torch.Tensor, temperature: float) -> torch.Tensor:
    """(batch, 2) log of (p_target, 1 - p_target), computed stably from log-softmax."""
    log_p = F.log_softmax(logits / temperature, dim=-1)  # (batch, classes)
    log_target = log_p.gather(1, target[:, None])  # (batch, 1)
    log_rest = torch.log1p(-log_target.exp().clamp(max=1 - 1e-7))  # (batch, 1)
    return torch.cat([log_target, log_rest], dim=1)


def dkd_parts(
    student_logits: torch.Tensor, teacher_logits: torch.Tensor, target: torch.Tensor, temperature: float
) -> tuple[torch.Tensor, torch.Tensor]:
    """(TCKD, NCKD), each T^2-scaled and averaged over the batch; the teacher is detached."""
    teacher_logits = teacher_logits.detach()
    tckd = F.kl_div(
        _binary_log_probs(student_logits, target, temperature),
        _binary_log_probs(teacher_logits, target, temperature),
        reduction="batchmean",
        log_target=True,
    )
    mask = F.one_hot(target, student_logits.shape[1]).to(student_logits.dtype) * _MASK
    nckd = F.kl_div(
        F.log_softmax((student_logits - mask) / temperature, dim=-1),
        F.log_softmax((teacher_logits - mask) / temperature, dim=-1),
        reduction="batchmean",
        log_target=True,
    )
    return tckd * temperature**2, nckd * temperature**2


@LOSSES.register("dkd")
def dkd_loss(
    student_logits: torch.Tensor,
    batch: dict[str, torch.Tensor],
    temperature: float = 4.0,
    alpha: float = 1.0,
    beta: float = 8.0,
    ce_weight: float = 1.0,
) -> LossTerms:
    """ce_weight * CE(z_s, y) + alpha * TCKD + beta * NCKD (defaults from Zhao et al. 2022)."""
    teacher_logits = batch["teacher_logits"]
    labels = batch["y"]
    target = torch.where(labels == UNLABELED, teacher_logits.argmax(1), labels)
    tckd, nckd = dkd_parts(student_logits, teacher_logits, target, temperature)
    ce = ce_weight * masked_cross_entropy(student_logits, labels)
    parts = {"tckd": alpha * tckd, "nckd": beta * nckd, "ce": ce}
    return LossTerms(total=parts["tckd"] + parts["nckd"] + ce, parts=parts)


@TERMS.register("dkd")
class DKDTerm(Term):
    """Zhao et al. 2022: alpha * TCKD + beta * NCKD at distill.temperature (CE is its own term)."""

    name: Literal["dkd"]
    alpha: NonNegativeFloat = 1.0
    beta: NonNegativeFloat = 8.0
    uses_temperature: ClassVar[bool] = True
    fixed_options: ClassVar[dict[str, Any]] = {"ce_weight": 0.0}
