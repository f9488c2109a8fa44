"""Feature taps by layer name, and contract tests over the feature-loss registry."""

from __future__ import annotations

import pytest
import torch
from pydantic import TypeAdapter
from torch import nn

from kdcore.config import ModelSpec
from kdcore.errors import ConfigError
from kdcore.losses.features import (
    FEATURE_LOSSES,
    FeatureTaps,
    HintRegressor,
    attention_loss,
    irg_loss,
    relational_loss,
)
from kdcore.models import build_model


def maps(seed: int, shape: tuple[int, ...] = (6, 4, 5, 5), requires_grad: bool = False) -> list[torch.Tensor]:
    torch.manual_seed(seed)
    return [torch.randn(*shape, requires_grad=requires_grad), torch.randn(6, 3, 5, 5, requires_grad=requires_grad)]


@pytest.mark.parametrize("name", FEATURE_LOSSES.names())
def test_every_feature_loss_is_finite_and_sends_no_gradient_to_the_teacher(name: str) -> None:
    student, teacher = maps(0, requires_grad=True), maps(1, requires_grad=True)
    terms = FEATURE_LOSSES.get(name)(student, teacher)
    assert torch.isfinite(terms.total) and terms.total > 0
    terms.total.backward()
    assert all(s.grad is not None and s.grad.abs().sum() > 0 for s in student)
    assert all(t.grad is None for t in teacher)


@pytest.mark.parametrize("name", FEATURE_LOSSES.names())
def test_every_feature_loss_is_zero_when_the_student_reproduces_the_teacher(name: str) -> None:
    teacher = maps(2)
    loss = FEATURE_LOSSES.get(name)
    assert loss([t.clone() for t in teacher], teacher).total.abs() < 1e-5
    moved = [t + 0.3 * torch.randn_like(t) for t in teacher]
    assert loss(moved, teacher).total > 1e-4


def test_relational_loss_ignores_scale_and_embedding_width() -> None:
    torch.manual_seed(3)
    teacher = torch.randn(8, 16)
    # the same geometry, scaled and embedded in more dimensions: distances up to scale, angles equal
    student = torch.cat([3 * teacher, torch.zeros(8, 4)], dim=1)
    assert relational_loss([student], [teacher]).total.abs() < 1e-5


def test_attention_resizes_the_student_map() -> None:
    torch.manual_seed(4)
    teacher = torch.randn(2, 8, 6, 6)
    student = torch.randn(2, 3, 3, 3, requires_grad=True)
    attention_loss([student], [teacher]).total.backward()
    assert student.grad is not None


@pytest.mark.parametrize(
    ("student_shape", "teacher_shape", "x_shape"),
    [((4, 7, 7), (16, 14, 14), (2, 4, 7, 7)), ((8, 5, 5), (8, 5, 5), (2, 8, 5, 5)), ((32,), (128,), (2, 32))],
)
def test_hint_regressor_maps_to_the_teacher_shape(student_shape, teacher_shape, x_shape) -> None:
    out = HintRegressor(student_shape, teacher_shape)(torch.randn(*x_shape))
    assert tuple(out.shape[1:]) == teacher_shape


def test_hint_regressor_rejects_a_map_against_a_vector() -> None:
    with pytest.raises(ConfigError, match="both be maps"):
        HintRegressor((4, 7, 7), (128,))


def cnn() -> nn.Module:
    spec = TypeAdapter(ModelSpec).validate_python({"name": "cnn", "channels": [4, 8], "hidden": 16})
    return build_model(spec, (1, 12, 12), 10)


def test_taps_capture_named_layers_and_can_be_removed() -> None:
    model = cnn().eval()
    with FeatureTaps(model, ["features.3", "head.2"], role="student") as taps:
        model(torch.randn(5, 1, 12, 12))
        first, second = taps.features()
    assert first.shape == (5, 4, 6, 6) and second.shape == (5, 16)
    model(torch.randn(1, 1, 12, 12))
    assert first.shape[0] == 5  # hooks removed: nothing captured after close


def test_unknown_layer_fails_with_the_valid_names() -> None:
    with pytest.raises(ConfigError) as info:
        FeatureTaps(cnn(), ["features.3", "backbone.7"], role="teacher")
    message = str(info.value)
    assert "teacher has no layer 'backbone.7'" in message and "features.0" in message and "head.4" in message


def test_relational_loss_has_bounded_gradients_at_duplicate_samples() -> None:
    """Identical views can share a batch; distance and direction between them must not blow up."""
    torch.manual_seed(5)
    teacher = torch.randn(30, 16).relu()
    teacher = torch.cat([teacher, teacher[:2]])  # samples 30 and 31 repeat samples 0 and 1
    base = torch.randn(30, 8).relu()
    # the same input in two rows of a batch can come out a rounding error apart
    student = torch.cat([base, base[:2] + 1e-7 * torch.randn(2, 8)]).requires_grad_(True)
    relational_loss([student], [teacher]).total.backward()
    assert torch.isfinite(student.grad).all() and student.grad.abs().max() < 100


def test_irg_parts_edges_ignore_scale_and_width_and_the_vertex_needs_equal_widths() -> None:
    torch.manual_seed(6)
    logits = torch.randn(8, 10)
    hidden_t = torch.randn(8, 16)
    # the same instance geometry, scaled and embedded in more dimensions: no edge loss
    hidden_s = torch.cat([3 * hidden_t, torch.zeros(8, 4)], dim=1)
    parts = irg_loss([hidden_s, logits], [hidden_t, logits]).parts
    assert parts["irg_edge"].abs() < 1e-6 and parts["irg_vertex"].abs() < 1e-6
    assert parts["irg_transformation"] > 0  # the student's hidden layer lies elsewhere relative to its logits
    one = irg_loss([logits + 1], [logits]).parts
    assert one["irg_transformation"] == 0 and one["irg_vertex"] > 0  # one layer: no transformation
    with pytest.raises(ConfigError, match=r"irg: .*same width \(student 12, teacher 10\)"):
        irg_loss([torch.randn(8, 12)], [logits])


def test_irg_has_finite_gradients_at_duplicate_samples() -> None:
    torch.manual_seed(7)
    teacher = [torch.randn(12, 16).relu(), torch.randn(12, 10)]
    teacher = [torch.cat([t, t[:2]]) for t in teacher]
    base = torch.randn(12, 8)
    student = [torch.cat([base, base[:2]]).requires_grad_(True), torch.randn(14, 10, requires_grad=True)]
    irg_loss(student, teacher).total.backward()
    assert all(torch.isfinite(s.grad).all() for s in student)
