"""The prepared dataset on disk: one safetensors file per split, `meta.json`, `manifest.csv`."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from kdcore.artifacts import load_tensors, read_json
from kdcore.errors import DataError


@dataclass(frozen=True)
class Split:
    x: torch.Tensor  # (N, C, H, W) normalised
    y: torch.Tensor  # (N,) class indices


@dataclass(frozen=True)
class PreparedData:
    meta: dict[str, Any]

    @property
    def input_shape(self) -> tuple[int, int, int]:
        return tuple(self.meta["input_shape"])  # type: ignore[return-value]

    @property
    def num_classes(self) -> int:
        return int(self.meta["num_classes"])

    @property
    def fill(self) -> torch.Tensor:
        """(C,) the normalised value of a black pixel: what shifted-in borders are filled with."""
        return torch.tensor(self.meta["fill"], dtype=torch.float32)


def load_meta(prepared_dir: Path) -> PreparedData:
    path = Path(prepared_dir) / "meta.json"
    if not path.is_file():
        raise DataError(f"{path}: missing; run the prepare stage first")
    return PreparedData(read_json(path))


def load_split(prepared_dir: Path, split: str) -> Split:
    tensors = load_tensors(Path(prepared_dir) / f"{split}.safetensors")
    return Split(tensors["x"], tensors["y"])
