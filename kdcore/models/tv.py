"""torchvision classifiers adapted to any number of input channels and classes."""

from __future__ import annotations

from pathlib import Path

from torch import nn

from kdcore.errors import DataError
from kdcore.models import InputShape, require_file


def _replace_first_conv(model: nn.Module, in_channels: int) -> None:
    """Swaps the first Conv2d for one with `in_channels` inputs, same geometry otherwise."""
    for parent in model.modules():
        for name, child in parent.named_children():
            if isinstance(child, nn.Conv2d):
                if child.in_channels == in_channels:
                    return
                new = nn.Conv2d(
                    in_channels,
                    child.out_channels,
                    child.kernel_size,
                    child.stride,
                    child.padding,
                    child.dilation,
                    groups=1 if child.groups == 1 else in_channels,
                    bias=child.bias is not None,
                    padding_mode=child.padding_mode,
                )
                setattr(parent, name, new)
                return
    raise ValueError(f"{type(model).__name__} has no Conv2d to adapt to {in_channels} input channels")


def build_torchvision(name: str, input_shape: InputShape, num_classes: int, weights: Path | None) -> nn.Module:
    import torchvision

    kwargs = {"weights": None, "num_classes": num_classes}
    if name.startswith(("inception", "googlenet")):
        kwargs["aux_logits"] = False
        kwargs["init_weights"] = True
    model = torchvision.models.get_model(name, **kwargs)
    _replace_first_conv(model, input_shape[0])
    if weights is not None:
        from safetensors.torch import load_file

        try:
            state = load_file(str(require_file(weights, "model weights file")))
        except DataError:
            raise
        except Exception as err:  # safetensors raises its own error types for other formats (pickle, zip)
            raise DataError(f"{weights}: not a safetensors weights file ({err})") from None
        fits = f"{name} with {input_shape[0]} channels and {num_classes} classes"
        try:
            missing, unexpected = model.load_state_dict(state, strict=False)
        except RuntimeError as err:  # shape mismatch
            first = str(err).split("\n\t")[1] if "\n\t" in str(err) else str(err)
            raise DataError(f"{weights}: does not fit {fits}: {first.strip()}") from None
        if missing or unexpected:
            raise DataError(
                f"{weights}: does not fit {fits} (missing {len(missing)} tensors, e.g. {missing[:2]}; "
                f"unexpected {unexpected[:2]})"
            )
    return model
