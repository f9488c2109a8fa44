"""Seeding and device choice: the same params and seed give the same numbers on CPU."""

from __future__ import annotations

import os
import random

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
