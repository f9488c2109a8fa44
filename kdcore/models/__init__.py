"""The model registry: `build_model(spec, input_shape, num_classes)` for every architecture.

Built-ins: `mlp`, `cnn`. Any other name is looked up among torchvision's classifiers.
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
    from kdcore.models import builtin, tv  # noqa: F401  (registers the built-ins)

    if spec.name in MODELS:
        return MODELS.get(spec.name)(spec, input_shape, num_classes)
    return tv.build_torchvision(spec.name, input_shape, num_classes, getattr(spec, "weights", None))


def count_params(model: nn.Module) -> int:
    """Trainable and frozen parameters; an ONNX model's initializer values."""
    return getattr(model, "num_parameters", None) or sum(p.numel() for p in model.parameters())


def require_file(path: Path, what: str) -> Path:
    if not Path(path).is_file():
        raise DataError(f"{path}: {what} not found")
    return Path(path)
