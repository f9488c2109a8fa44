"""The omitted-class bias correction (Hinton et al. 2015, section 3): the bias is the validation
split's best, and the corrected network is the same network with that bias added to its output layer."""

from __future__ import annotations

import pytest
import torch

from kdcore.config.models import CNNSpec, MLPSpec
from kdcore.errors import ConfigError
from kdcore.models import build_model, meta_model
from kdcore.omitted import GRID, apply_bias, choose_bias, output_layer, shifted


def test_the_chosen_bias_is_the_best_of_the_grid_on_the_data_it_is_given() -> None:
    generator = torch.Generator().manual_seed(0)
    labels = torch.arange(4).repeat(50)
    logits = torch.randn(200, 4, generator=generator) + 3.0 * torch.nn.functional.one_hot(labels, 4)
    logits[:, 2] -= 4.0  # class 2 under-predicted, as a class no transfer sample showed
    bias, before, after = choose_bias(logits, labels, [2])
    scores = {b: float((shifted(logits, [2], b).argmax(1) == labels).float().mean()) for b in GRID}
    assert after == max(scores.values()) and bias == min(b for b, s in scores.items() if s == after)
    assert before == scores[0.0] and after > before and 2.0 <= bias <= 6.0
    flat = torch.zeros(10, 4)
    flat[:, 0] = 1.0
    assert choose_bias(flat, torch.zeros(10, dtype=torch.long), [3]) == (0.0, 1.0, 1.0)  # no gain: no bias


@pytest.mark.parametrize(
    "spec", [MLPSpec(name="mlp", hidden=[16]), CNNSpec(name="cnn", channels=[4], hidden=8, batchnorm=True)]
)
def test_the_corrected_network_outputs_the_shifted_logits(spec) -> None:
    torch.manual_seed(0)
    model = build_model(spec, (1, 8, 8), 10).eval()
    x = torch.randn(5, 1, 8, 8)
    before = model(x).detach()
    apply_bias(model, 10, [3, 7], 2.5)
    assert torch.allclose(model(x).detach(), shifted(before, [3, 7], 2.5), atol=1e-6)


def test_a_model_without_a_linear_output_is_refused_by_name() -> None:
    assert output_layer(meta_model(MLPSpec(name="mlp", hidden=[16]), (1, 8, 8), 10), 10).out_features == 10
    with pytest.raises(ConfigError, match="distill.omitted_bias: .* no Linear output layer"):
        output_layer(torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(64, 5)), 10)
