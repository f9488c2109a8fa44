"""Every registered model, and a few torchvision ones, runs forward and backward on each input shape."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from pydantic import TypeAdapter
from safetensors.torch import save_file

from kdcore.checkpoint import load_model_dir, save_model_dir
from kdcore.config import ModelSpec
from kdcore.errors import DataError
from kdcore.models import MODELS, build_model, count_params

SPECS = {
    "mlp": {"name": "mlp", "hidden": [16, 8], "dropout": 0.1},
    "cnn": {"name": "cnn", "channels": [4, 8], "hidden": 16},
}
TORCHVISION = ["resnet18", "mobilenet_v3_small"]
SHAPES = [(1, 28, 28), (1, 8, 8), (3, 16, 16)]


def spec_of(raw: dict):
    return TypeAdapter(ModelSpec).validate_python(raw)


def test_every_registered_model_has_a_test_spec() -> None:
    from kdcore.config.models import GNN_MODELS
    from kdcore.models import builtin  # noqa: F401

    assert set(MODELS.names()) == set(SPECS) | set(GNN_MODELS)  # GNNs: tests/test_graph.py (forward and backward)


@pytest.mark.parametrize("name", [*SPECS, *TORCHVISION])
@pytest.mark.parametrize("shape", SHAPES, ids=lambda s: "x".join(map(str, s)))
def test_forward_and_backward(name: str, shape: tuple[int, int, int]) -> None:
    torch.manual_seed(0)
    model = build_model(spec_of(SPECS.get(name, {"name": name})), shape, num_classes=7)
    model.train()
    x = torch.randn(3, *shape)
    logits = model(x)
    assert logits.shape == (3, 7)
    logits.square().mean().backward()
    grads = [p.grad for p in model.parameters() if p.requires_grad]
    assert all(g is not None and torch.isfinite(g).all() for g in grads)
    assert any(g.abs().sum() > 0 for g in grads)


def test_model_directory_round_trip(tmp_path: Path) -> None:
    spec = spec_of(SPECS["cnn"])
    model = build_model(spec, (1, 8, 8), 10).eval()
    save_model_dir(tmp_path / "m", model, spec, (1, 8, 8), 10, seed=3)
    loaded, meta = load_model_dir(tmp_path / "m")
    x = torch.randn(5, 1, 8, 8)
    assert torch.equal(model(x), loaded(x))
    assert meta["seed"] == 3 and count_params(loaded) == count_params(model)


def test_torchvision_weights_file_is_loaded(tmp_path: Path) -> None:
    source = build_model(spec_of({"name": "resnet18"}), (1, 16, 16), 4).eval()
    save_file({k: v.contiguous() for k, v in source.state_dict().items()}, str(tmp_path / "w.safetensors"))
    again = build_model(
        spec_of({"name": "resnet18", "weights": str(tmp_path / "w.safetensors")}), (1, 16, 16), 4
    ).eval()
    x = torch.randn(2, 1, 16, 16)
    assert torch.equal(source(x), again(x))


def test_torchvision_weights_that_do_not_fit_fail_clearly(tmp_path: Path) -> None:
    source = build_model(spec_of({"name": "resnet18"}), (1, 16, 16), 4)
    save_file({k: v.contiguous() for k, v in source.state_dict().items()}, str(tmp_path / "w.safetensors"))
    with pytest.raises(DataError, match="does not fit resnet18"):
        build_model(spec_of({"name": "resnet18", "weights": str(tmp_path / "w.safetensors")}), (3, 16, 16), 10)


def test_missing_weights_file_is_named(tmp_path: Path) -> None:
    with pytest.raises(DataError, match="nope.safetensors"):
        build_model(spec_of({"name": "resnet18", "weights": str(tmp_path / "nope.safetensors")}), (1, 16, 16), 4)


def test_missing_model_directory_is_named(tmp_path: Path) -> None:
    with pytest.raises(DataError, match="model.safetensors: missing"):
        load_model_dir(tmp_path / "absent")
