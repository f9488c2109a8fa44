"""The prepared dataset on disk: one directory of shards per split (kdcore.data.shards), `meta.json`
(shape, classes, the teacher split's normalisation), `manifest.csv`."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from kdcore.artifacts import read_json
from kdcore.data.shards import ShardedSplit
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
    def mean(self) -> torch.Tensor:
        return torch.tensor(self.meta["mean"], dtype=torch.float32)

    @property
    def std(self) -> torch.Tensor:
        return torch.tensor(self.meta["std"], dtype=torch.float32)

    @property
    def fill(self) -> torch.Tensor:
        """(C,) the normalised value of a black pixel: what shifted-in borders are filled with."""
        return torch.tensor(self.meta["fill"], dtype=torch.float32)


def load_meta(prepared_dir: Path) -> PreparedData:
    path = Path(prepared_dir) / "meta.json"
    if not path.is_file():
        raise DataError(f"{path}: missing; run the prepare stage first")
    return PreparedData(read_json(path))


def open_split(prepared_dir: Path, split: str) -> ShardedSplit:
    """A split's shards, read on demand (`images(index, mean, std)` for normalised batches)."""
    return ShardedSplit(Path(prepared_dir) / split)


def load_split(prepared_dir: Path, split: str) -> Split:
    """A whole split in memory, normalised: for the small splits that are read whole (test, validation)
    and data small enough to hold."""
    meta = load_meta(prepared_dir)
    shards = open_split(prepared_dir, split)
    if not len(shards):
        shape = tuple(meta.meta["input_shape"])
        return Split(torch.zeros((0, *shape)), torch.zeros(0, dtype=torch.int64))
    return Split(shards.images(np.arange(len(shards)), meta.mean, meta.std), shards.y)
