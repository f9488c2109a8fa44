"""Contract tests over the loss registry, and the maths of Hinton's loss."""

from __future__ import annotations

from functools import partial

import pytest
import torch
import torch.nn.functional as F

from kdcore.losses import LOSSES
from kdcore.losses.hinton import UNLABELED, kd_divergence, masked_cross_entropy

CLASSES = 10


def batch_for(teacher_logits: torch.Tensor, labels: torch.Tensor) -> dict[str, torch.Tensor]:
    return {"teacher_logits": teacher_logits, "y": labels}


@pytest.mark.parametrize("name", LOSSES.names())
def test_every_loss_is_finite_and_sends_no_gradient_to_the_teacher(name: str) -> None:
    torch.manual_seed(0)
    student = torch.randn(16, CLASSES, requires_grad=True)
    teacher = torch.randn(16, CLASSES, requires_grad=True)
    labels = torch.randint(0, CLASSES, (16,))
    terms = LOSSES.get(name)(student, batch_for(teacher, labels))
    assert torch.isfinite(terms.total)
    assert all(torch.isfinite(p) for p in terms.parts.values())
    terms.total.backward()
    assert student.grad is not None and student.grad.abs().sum() > 0
    assert teacher.grad is None


def test_kd_is_zero_when_student_equals_teacher() -> None:
    logits = torch.randn(32, CLASSES) * 3
    for temperature in (1.0, 4.0, 20.0):
        assert kd_divergence(logits.clone(), logits, temperature).abs() < 1e-6


def test_kd_is_minimal_at_the_teacher() -> None:
    torch.manual_seed(1)
    teacher = torch.randn(8, CLASSES)
    at_teacher = kd_divergence(teacher.clone(), teacher, 4.0)
    for _ in range(5):
        assert kd_divergence(teacher + 0.3 * torch.randn_like(teacher), teacher, 4.0) > at_teacher


def test_kd_matches_the_formula() -> None:
    torch.manual_seed(2)
    s, t, temp = torch.randn(4, CLASSES), torch.randn(4, CLASSES), 3.0
    p_t, p_s = F.softmax(t / temp, 1), F.softmax(s / temp, 1)
    expected = (p_t * (p_t.log() - p_s.log())).sum(1).mean() * temp**2
    assert torch.allclose(kd_divergence(s, t, temp), expected, atol=1e-6)


def test_t_squared_keeps_the_gradient_scale_independent_of_t() -> None:
    """For large T the soft-target gradient is ~(z_s - z_t) / (K * batch) with the T^2 factor,
    and would shrink as 1/T^2 without it (Hinton et al. 2015, section 2.1)."""
    torch.manual_seed(3)
    teacher = torch.randn(8, CLASSES)
    teacher -= teacher.mean(1, keepdim=True)
    student0 = torch.randn(8, CLASSES)
    student0 -= student0.mean(1, keepdim=True)
    norms = {}
    for temperature in (10.0, 20.0, 40.0):
        student = student0.clone().requires_grad_(True)
        kd_divergence(student, teacher, temperature).backward()
        norms[temperature] = student.grad.norm().item()
    expected = ((student0 - teacher) / CLASSES / 8).norm().item()
    for temperature, norm in norms.items():
        assert norm == pytest.approx(expected, rel=0.05), temperature
    # without the factor the gradient at T=40 would be 16x smaller than at T=10
    assert norms[40.0] / norms[10.0] == pytest.approx(1.0, abs=0.05)


def test_unlabeled_samples_contribute_no_cross_entropy() -> None:
    torch.manual_seed(5)
    s = torch.randn(4, CLASSES)
    y = torch.tensor([3, UNLABELED, 1, UNLABELED])
    assert torch.allclose(masked_cross_entropy(s, y), F.cross_entropy(s[[0, 2]], y[[0, 2]]))
    none = torch.full((4,), UNLABELED)
    assert masked_cross_entropy(s, none) == 0


def test_registry_rejects_unknown_names() -> None:
    with pytest.raises(KeyError, match="unknown loss 'fitnet'; known: ce, dkd, kd"):
        LOSSES.get("fitnet")


def test_partial_binding_used_by_the_distill_stage() -> None:
    loss = partial(LOSSES.get("kd"), temperature=2.0)
    s, t = torch.randn(3, CLASSES), torch.randn(3, CLASSES)
    terms = loss(s, batch_for(t, torch.tensor([0, 1, 2])))
    assert set(terms.parts) == {"kd"} and torch.allclose(terms.total, kd_divergence(s, t, 2.0))


DISTILLATION_LOSSES = [name for name in LOSSES.names() if name != "ce"]


@pytest.mark.parametrize("name", DISTILLATION_LOSSES)
def test_every_distillation_loss_is_minimal_when_the_student_reproduces_the_teacher(name: str) -> None:
    torch.manual_seed(6)
    teacher = torch.randn(16, CLASSES) * 2
    labels = teacher.argmax(1)  # labels the teacher agrees with: CE parts do not pull elsewhere
    loss = LOSSES.get(name)
    at_teacher = loss(teacher.clone(), batch_for(teacher, labels))
    for part in at_teacher.parts.values():
        assert torch.isfinite(part)
    kd_parts = {k: v for k, v in at_teacher.parts.items() if k != "ce"}
    assert all(v.abs() < 1e-5 for v in kd_parts.values()), kd_parts
    for _ in range(5):
        moved = loss(teacher + 0.5 * torch.randn_like(teacher), batch_for(teacher, labels))
        assert sum(v for k, v in moved.parts.items() if k != "ce") > 1e-4


def test_dkd_parts_add_up_to_hinton_kl_when_weighted_by_the_target_mass() -> None:
    """KD = TCKD + (1 - p_t[target]) * NCKD per sample (Zhao et al. 2022, eq. 3); with one sample the
    batch means are the sample values."""
    from kdcore.losses.dkd import dkd_parts

    torch.manual_seed(7)
    s, t = torch.randn(1, CLASSES), torch.randn(1, CLASSES)
    target = torch.tensor([3])
    temp = 2.0
    tckd, nckd = dkd_parts(s, t, target, temp)
    p_t_target = F.softmax(t / temp, 1)[0, 3]
    assert torch.allclose(kd_divergence(s, t, temp), tckd + (1 - p_t_target) * nckd, atol=1e-5)


def test_dkd_uses_the_teacher_prediction_for_unlabeled_samples() -> None:
    torch.manual_seed(8)
    s, t = torch.randn(4, CLASSES), torch.randn(4, CLASSES)
    unlabeled = LOSSES.get("dkd")(s, batch_for(t, torch.full((4,), UNLABELED)))
    as_labeled = LOSSES.get("dkd")(s, batch_for(t, t.argmax(1)), ce_weight=0.0)
    assert torch.allclose(unlabeled.parts["tckd"], as_labeled.parts["tckd"])
    assert torch.allclose(unlabeled.parts["nckd"], as_labeled.parts["nckd"])
    assert unlabeled.parts["ce"] == 0
