"""Ensemble soft labels: the weighting maths of each method."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from kdcore.errors import ConfigError
from kdcore.transfer.ensemble import combine_logits, ensemble_weights, entropy


def logits(seed: int, k: int = 3, v: int = 5, c: int = 4) -> torch.Tensor:
    torch.manual_seed(seed)
    return torch.randn(k, v, c) * 2


def test_mean_is_the_average_of_probabilities_not_of_logits() -> None:
    z = logits(0)
    probs = F.softmax(combine_logits(z, "mean"), dim=-1)
    assert torch.allclose(probs, F.softmax(z, -1).mean(0), atol=1e-6)
    assert not torch.allclose(probs, F.softmax(z.mean(0), -1), atol=1e-3)


def test_one_teacher_is_its_own_ensemble() -> None:
    z = logits(1, k=1)
    for method in ("mean", "confidence"):
        assert torch.allclose(F.softmax(combine_logits(z, method), -1), F.softmax(z[0], -1), atol=1e-6)


def test_fixed_weights_are_normalised() -> None:
    z = logits(2, k=2)
    probs = F.softmax(combine_logits(z, "weights", weights=[3.0, 1.0]), -1)
    expected = 0.75 * F.softmax(z[0], -1) + 0.25 * F.softmax(z[1], -1)
    assert torch.allclose(probs, expected, atol=1e-6)


def test_confidence_weighs_the_more_certain_teacher_more_per_sample() -> None:
    sure = torch.tensor([[8.0, 0.0, 0.0], [0.0, 0.0, 0.0]])  # sample 0 certain, sample 1 uniform
    unsure = torch.tensor([[0.0, 0.0, 0.0], [0.0, 0.0, 8.0]])  # the reverse
    z = torch.stack([sure, unsure])  # (2 teachers, 2 views, 3 classes)
    w = ensemble_weights(F.softmax(z, -1), "confidence")
    assert w[0, 0] > 0.5 > w[1, 0] and w[1, 1] > 0.5 > w[0, 1]
    assert torch.allclose(w.sum(0), torch.ones(2))
    probs = F.softmax(combine_logits(z, "confidence"), -1)
    assert probs[0].argmax() == 0 and probs[1].argmax() == 2
    # both samples end up more certain than with a plain mean
    mean = F.softmax(combine_logits(z, "mean"), -1)
    assert (entropy(probs) < entropy(mean)).all()


def test_ensemble_probabilities_are_valid() -> None:
    for method, kwargs in (("mean", {}), ("weights", {"weights": [1, 2, 3]}), ("confidence", {"tau": 0.5})):
        probs = F.softmax(combine_logits(logits(3), method, **kwargs), -1)
        assert torch.allclose(probs.sum(-1), torch.ones(5), atol=1e-6) and (probs >= 0).all()


@pytest.mark.parametrize(
    ("method", "weights", "message"),
    [
        ("weights", [1.0], "one weight per teacher"),
        ("weights", [1.0, -1.0, 1.0], "non-negative"),
        ("median", None, "unknown 'median'; known: mean, weights, confidence"),
    ],
)
def test_bad_settings_name_the_key(method: str, weights, message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        combine_logits(logits(4), method, weights=weights)
