"""Response-based distillation (Hinton, Vinyals, Dean 2015, "Distilling the Knowledge in a Neural Network")."""

from __future__ import annotations

from typing import ClassVar, Literal

import torch
import torch.nn.functional as F

from kdcore.losses import LOSSES, TERMS, LossTerms
from kdcore.schema import Term

UNLABELED = -1  # label value of a sample without a hard label


def soft_labels(logits: torch.Tensor, temperature: float) -> torch.Tensor:
    """softmax(z / T): (batch, classes) probabilities, flatter for larger T."""
    return F.softmax(logits / temperature, dim=-1)


def kd_divergence(student_logits: torch.Tensor, teacher_logits: torch.Tensor, temperature: float) -> torch.Tensor:
    """T^2 * KL(softmax(z_t / T) || softmax(z_s / T)), mean over the batch.

    x T^2 keeps the soft-target gradient scale independent of T (Hinton et al. 2015, section 2).
    The teacher side is detached: no gradient reaches the teacher.
    """
    log_p_s = F.log_softmax(student_logits / temperature, dim=-1)  # (batch, classes)
    log_p_t = F.log_softmax(teacher_logits.detach() / temperature, dim=-1)  # (batch, classes)
    kl = F.kl_div(log_p_s, log_p_t, reduction="batchmean", log_target=True)
    return kl * temperature**2


def masked_cross_entropy(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """Mean cross-entropy over the samples that carry a label (label != -1); zero if none do."""
    has_label = labels != UNLABELED
    if bool(has_label.all()):  # the common case: no copies
        return F.cross_entropy(logits, labels)
    if not bool(has_label.any()):
        return logits.sum() * 0.0
    return F.cross_entropy(logits[has_label], labels[has_label])


@LOSSES.register("ce")
def cross_entropy_loss(student_logits: torch.Tensor, batch: dict[str, torch.Tensor]) -> LossTerms:
    """Plain supervised loss, CE(z_s, y): the teacher's and the scratch student's objective."""
    ce = masked_cross_entropy(student_logits, batch["y"])
    return LossTerms(total=ce, parts={"ce": ce})


@LOSSES.register("kd")
def kd_loss(student_logits: torch.Tensor, batch: dict[str, torch.Tensor], temperature: float = 4.0) -> LossTerms:
    """Hinton KD's soft-label term alone, T^2 * KL(softmax(z_t/T) || softmax(z_s/T)); combine it with
    "ce" through weighted terms (distill.terms)."""
    kd = kd_divergence(student_logits, batch["teacher_logits"], temperature)
    return LossTerms(total=kd, parts={"kd": kd})


@TERMS.register("ce")
class CETerm(Term):
    """Cross-entropy with the hard labels, where the sample has one."""

    name: Literal["ce"]


@TERMS.register("kd")
class KDTerm(Term):
    """Hinton et al. 2015: T^2 * KL(teacher || student) at distill.temperature. Hinton's loss is
    `(1 - alpha) ce + alpha kd`: two terms with those weights."""

    name: Literal["kd"]
    uses_temperature: ClassVar[bool] = True
