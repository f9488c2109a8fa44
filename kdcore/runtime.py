"""Seeding and device choice: the same params and seed give the same numbers on CPU."""

from __future__ import annotations

import os
import random
from dataclasses import dataclass

import numpy as np
import torch

from kdcore.errors import ConfigError


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)
    os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
    torch.use_deterministic_algorithms(True, warn_only=True)


def resolve_device(device: str) -> torch.device:
    """`auto` takes CUDA when present, else the CPU."""
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if device.startswith("cuda") and not torch.cuda.is_available():
        raise ConfigError(f"device: {device!r} but no CUDA device is available here; use device: auto or cpu")
    try:
        return torch.device(device)
    except RuntimeError as err:
        raise ConfigError(f"device: {device!r} is not a device torch knows ({err})") from None


@dataclass(frozen=True)
class Accel:
    """How models run on the device (params `gpu`), resolved for the stage's device: on the CPU every
    option is off unless params ask for it, so CPU results stay exact and deterministic."""

    amp: torch.dtype | None = None  # autocast dtype of forward passes and losses; None: float32
    channels_last: bool = False  # NHWC memory format for 4-D inputs and convolution weights
    compile: bool = False  # torch.compile the training module
    input_bytes: int = 16 << 20  # float32 input of one forward pass without gradients


_ACCEL = Accel()


def configure(gpu, device: torch.device) -> Accel:
    """Sets the stage's Accel from params `gpu` (kdcore.config.GpuConfig) and the device."""
    global _ACCEL
    cuda = device.type == "cuda"
    amp = {"off": None, "bf16": torch.bfloat16, "fp16": torch.float16}.get(gpu.amp)
    if gpu.amp == "auto":
        amp = torch.bfloat16 if cuda and torch.cuda.is_bf16_supported() else None
    channels_last = gpu.channels_last == "on" or (gpu.channels_last == "auto" and cuda)
    _ACCEL = Accel(amp, channels_last, gpu.compile, (gpu.inference_mib << 20) if cuda else 16 << 20)
    return _ACCEL


def accel() -> Accel:
    return _ACCEL


def autocast(device: torch.device):
    """The stage's autocast context for `device` (a no-op without amp)."""
    import contextlib

    dtype = _ACCEL.amp
    if dtype is None:
        return contextlib.nullcontext()
    return torch.autocast(device_type=device.type, dtype=dtype)
