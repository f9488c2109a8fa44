"""The model registry: `build_model(spec, input_shape, num_classes)` for every architecture.

Built-ins: `mlp`, `cnn`; for graph data `gcn`, `sage`, `gat` (kdcore/graph/models.py). Any other name is
looked up among torchvision's classifiers.
"""

from __future__ import annotations

from collections.abc import Callable
from functools import lru_cache
from pathlib import Path

from torch import nn

from kdcore.errors import DataError
from kdcore.registry import Registry

InputShape = tuple[int, int, int]  # (channels, height, width)
Builder = Callable[..., nn.Module]

MODELS: Registry[Builder] = Registry("model")


@lru_cache(maxsize=1)
def torchvision_names() -> list[str]:
    """Classification models torchvision can build (no detection or segmentation)."""
    import torchvision

    return sorted(torchvision.models.list_models(module=torchvision.models))


def build_model(spec, input_shape: InputShape, num_classes: int) -> nn.Module:
    """Builds the model that `spec` (a config.ModelSpec) names, randomly initialised unless it has weights."""
    from kdcore.graph import models as graph_models  # noqa: F401  (registers gcn, sage, gat)
    from kdcore.models import builtin, tv  # noqa: F401  (registers the built-ins)

    if spec.name in MODELS:
        return MODELS.get(spec.name)(spec, input_shape, num_classes)
    return tv.build_torchvision(spec.name, input_shape, num_classes, getattr(spec, "weights", None))


def count_params(model: nn.Module) -> int:
    """Trainable and frozen parameters; an ONNX model's initializer values."""
    return getattr(model, "num_parameters", None) or sum(p.numel() for p in model.parameters())


def require_file(path: Path, what: str) -> Path:
    if Path(path).is_dir():
        raise DataError(f"{path}: {what} is a directory, not a file")
    if not Path(path).is_file():
        raise DataError(f"{path}: {what} not found")
    return Path(path)


def meta_model(spec, input_shape: InputShape, num_classes: int) -> nn.Module:
    """The architecture `spec` names, built on the meta device: names, shapes and layer types without
    memory or weights (a torchvision spec's `weights` file is checked apart, by check_weights_file)."""
    import torch

    if getattr(spec, "weights", None) is not None:
        spec = spec.model_copy(update={"weights": None})
    with torch.device("meta"):
        return build_model(spec, input_shape, num_classes)


def check_weights_file(path: Path, model: nn.Module, name: str, what: str) -> None:
    """`path` must be a safetensors file holding exactly `model`'s state dict (names and shapes). Only
    the file's header is read, so this is cheap for any size and works on a meta-device model."""
    from safetensors import safe_open

    path = require_file(path, what)
    try:
        with safe_open(str(path), framework="pt") as handle:
            shapes = {key: tuple(handle.get_slice(key).get_shape()) for key in handle.keys()}  # noqa: SIM118
    except Exception as err:  # safetensors raises its own error types for other formats (pickle, zip)
        raise DataError(f"{what}: {path} is not a safetensors file ({err})") from None
    expected = {key: tuple(value.shape) for key, value in model.state_dict().items()}
    missing = [k for k in expected if k not in shapes]
    unexpected = [k for k in shapes if k not in expected]
    resized = [f"{k} {shapes[k]} vs {expected[k]}" for k in expected if k in shapes and shapes[k] != expected[k]]
    if missing or unexpected or resized:
        raise DataError(
            f"{what}: {path} does not fit model {name!r}: missing {missing[:3]}, "
            f"unexpected {unexpected[:3]}, other shapes {resized[:2]}"
        )
