"""Weighted loss terms (distill.terms): response terms, feature terms on real models, layer checks."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from pydantic import TypeAdapter

from kdcore.config import ModelSpec
from kdcore.errors import ConfigError
from kdcore.losses.compose import Objective, StudentWithAux
from kdcore.losses.hinton import kd_divergence
from kdcore.models import build_model
from kdcore.transfer.views import Views

CLASSES = 10
SHAPE = (1, 12, 12)


def model(spec: dict) -> torch.nn.Module:
    torch.manual_seed(0)
    return build_model(TypeAdapter(ModelSpec).validate_python(spec), SHAPE, CLASSES)


def views(n: int = 24) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    torch.manual_seed(1)
    images = torch.randn(n, *SHAPE)
    src = torch.arange(n).repeat_interleave(2)
    dx = torch.randint(-1, 2, (2 * n,))
    dy = torch.randint(-1, 2, (2 * n,))
    return images, src, dx, dy, torch.zeros(1)


def test_ce_plus_kd_terms_equal_hintons_loss() -> None:
    """Hinton et al. 2015: (1 - alpha) CE(z_s, y) + alpha T^2 KL(p_t^T || p_s^T)."""
    torch.manual_seed(2)
    s, t, y = torch.randn(8, CLASSES), torch.randn(8, CLASSES), torch.randint(0, CLASSES, (8,))
    batch = {"teacher_logits": t, "y": y}
    for alpha in (0.7, 0.0):
        objective = Objective([{"name": "ce", "weight": 1 - alpha}, {"name": "kd", "weight": alpha}], temperature=3.0)
        composed = objective(s, batch)
        reference = (1 - alpha) * F.cross_entropy(s, y) + alpha * kd_divergence(s, t, 3.0)
        assert torch.allclose(composed.total, reference, atol=1e-6)
        assert torch.allclose(composed.parts["kd"], alpha * kd_divergence(s, t, 3.0))
        assert torch.allclose(composed.parts["ce"], (1 - alpha) * F.cross_entropy(s, y))
        assert set(composed.parts) == {"ce", "kd"}


def test_dkd_term_leaves_ce_to_its_own_term() -> None:
    torch.manual_seed(3)
    s, t, y = torch.randn(8, CLASSES), torch.randn(8, CLASSES), torch.randint(0, CLASSES, (8,))
    only_dkd = Objective([{"name": "dkd", "weight": 1.0, "alpha": 1.0, "beta": 8.0}], temperature=4.0)
    terms = only_dkd(s, {"teacher_logits": t, "y": y})
    assert float(terms.parts["ce"]) == 0.0
    assert torch.allclose(terms.total, terms.parts["tckd"] + terms.parts["nckd"])


def test_unknown_term_names_the_known_ones() -> None:
    known = "attention, ce, dkd, hint, irg, kd, relational"
    with pytest.raises(ConfigError, match=f"unknown term 'fitnet'; known: {known}"):
        Objective([{"name": "fitnet"}], temperature=2.0)


@pytest.mark.parametrize(
    ("student_spec", "term"),
    [
        (
            {"name": "mlp", "hidden": [16]},
            {"name": "hint", "student_layers": ["features.2"], "teacher_layers": ["head.2"]},
        ),
        (
            {"name": "mlp", "hidden": [16]},
            {"name": "relational", "student_layers": ["features.2"], "teacher_layers": ["head.2"]},
        ),
        (
            {"name": "mlp", "hidden": [16]},
            {"name": "irg", "student_layers": ["features.2", "head"], "teacher_layers": ["head.2", "head.4"]},
        ),
        (
            {"name": "cnn", "channels": [4, 8], "hidden": 16},
            {
                "name": "attention",
                "student_layers": ["features.3", "features.7"],
                "teacher_layers": ["features.3", "features.7"],
            },
        ),
        (
            {"name": "cnn", "channels": [4], "hidden": 16},
            {"name": "hint", "student_layers": ["features.2"], "teacher_layers": ["features.6"]},
        ),
    ],
)
def test_feature_terms_train_the_student_and_leave_the_teacher_alone(student_spec: dict, term: dict) -> None:
    teacher = model({"name": "cnn", "channels": [8, 16], "hidden": 32})
    before = {k: v.clone() for k, v in teacher.state_dict().items()}
    student = model(student_spec)
    objective = Objective([{"weight": 1.0, **term}], temperature=2.0)
    assert objective.needs_teacher_features
    objective.check_layers(student, teacher)
    images, src, dx, dy, fill = views()
    targets = objective.teacher_targets(teacher, images, Views(src, dx, dy), fill, torch.device("cpu"), chunk=10)
    assert all(len(t) == len(src) and not t.requires_grad for t in targets.values())
    trained = objective.attach(student, targets, images[:2])
    assert isinstance(trained, StudentWithAux) == (term["name"] == "hint")

    idx = torch.arange(16)
    x = images[src[idx]]
    batch = {"x": x, "y": torch.zeros(16, dtype=torch.long), **{k: v[idx] for k, v in targets.items()}}
    trained.eval()  # no BatchNorm statistics updates: the step below is the only change

    def loss() -> torch.Tensor:
        return objective(trained(x), batch).total

    start = loss()
    assert start > 0
    trained.zero_grad()
    start.backward()
    reached = [p for p in trained.parameters() if p.grad is not None]  # the layers up to the tapped one
    assert reached and sum(float(p.grad.abs().sum()) for p in reached) > 0
    with torch.no_grad():  # a small step down the gradient lowers the term: it is a descent direction
        for p in reached:
            p -= 1e-4 * p.grad
    assert loss().item() < start.item()
    objective.detach()
    assert all(torch.equal(before[k], v) for k, v in teacher.state_dict().items())
    # the student alone is what gets saved: no regressor weights in its state
    assert set(student.state_dict()) == set(model(student_spec).state_dict())


def test_unknown_layer_fails_before_training_with_the_valid_names() -> None:
    teacher = model({"name": "cnn", "channels": [8, 16], "hidden": 32})
    student = model({"name": "mlp", "hidden": [16]})
    objective = Objective([{"name": "hint", "student_layers": ["features.9"], "teacher_layers": ["head.2"]}], 2.0)
    with pytest.raises(ConfigError) as info:
        objective.check_layers(student, teacher)
    message = str(info.value)
    assert "has no layer 'features.9'" in message and "features.2" in message and "\n" not in message


def test_attention_on_a_vector_layer_is_refused_with_its_shape() -> None:
    teacher = model({"name": "cnn", "channels": [8, 16], "hidden": 32})
    objective = Objective([{"name": "attention", "student_layers": ["features.2"], "teacher_layers": ["head.2"]}], 2.0)
    images, src, dx, dy, fill = views(4)
    with pytest.raises(ConfigError, match="conv feature maps"):
        objective.teacher_targets(teacher, images, Views(src, dx, dy), fill, torch.device("cpu"))


def test_an_irg_term_whose_last_layers_differ_in_width_is_refused_before_training() -> None:
    teacher = model({"name": "cnn", "channels": [8, 16], "hidden": 32})
    student = model({"name": "mlp", "hidden": [16]})
    objective = Objective(
        [{"name": "irg", "student_layers": ["features.2", "features.1"], "teacher_layers": ["head.2", "head.4"]}], 2.0
    )
    with pytest.raises(ConfigError, match=r"distill.terms\[0\] \(irg\): the last layers .* give 16 and 10 values"):
        objective.check_layers(student, teacher)
