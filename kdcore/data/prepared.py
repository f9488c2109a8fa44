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
    x: Images  # (N, C, H, W) normalised: a tensor, or SplitImages read on demand
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


IN_MEMORY_BYTES = 256 << 20  # a split whose normalised float32 samples fit in this is read whole


class SplitImages:
    """A split's normalised samples read on demand, indexed like a tensor: `images[idx]` (a long tensor,
    array, list, int or slice) reads just those samples from the shards, as float32 (N, C, H, W).
    Stages that index their images never need to hold them all."""

    def __init__(
        self,
        shards: ShardedSplit,
        mean: torch.Tensor,
        std: torch.Tensor,
        shape: tuple[int, ...],
        rows: np.ndarray | None = None,
    ) -> None:
        self.shards, self.mean, self.std, self.rows = shards, mean, std, rows  # rows: a subset's rows
        self.shape = torch.Size((len(shards) if rows is None else len(rows), *shape))

    def __len__(self) -> int:
        return self.shape[0]

    def subset(self, index) -> SplitImages:
        """The samples at `index`, still read on demand."""
        rows = self._rows(index)
        return SplitImages(self.shards, self.mean, self.std, tuple(self.shape[1:]), rows)

    def _rows(self, index) -> np.ndarray:
        if isinstance(index, slice):
            index = np.arange(len(self))[index]
        elif isinstance(index, torch.Tensor) and index.dtype == torch.bool:
            index = index.nonzero().flatten()
        index = np.asarray(index, dtype=np.int64).reshape(-1)
        return index if self.rows is None else self.rows[index]

    def __getitem__(self, index) -> torch.Tensor:
        if isinstance(index, int):
            return self[[index]][0]
        return self.shards.images(self._rows(index), self.mean, self.std)


Images = torch.Tensor | SplitImages  # what a split's `x` is: in memory, or read on demand


def take(images, index: torch.Tensor):
    """images[index], without reading anything when the images are read on demand (anything with `subset`)."""
    return images[index] if isinstance(images, torch.Tensor) else images.subset(index)


def open_split(prepared_dir: Path, split: str) -> ShardedSplit:
    """A split's shards, read on demand (`images(index, mean, std)` for normalised batches)."""
    return ShardedSplit(Path(prepared_dir) / split)


def fits_in_memory(nbytes: int) -> bool:
    """Whether samples of `nbytes` (as float32) are read whole rather than on demand (IN_MEMORY_BYTES)."""
    return nbytes <= IN_MEMORY_BYTES


def load_split(prepared_dir: Path, split: str) -> Split:
    """A split, normalised: in memory when its float32 samples fit in IN_MEMORY_BYTES (the bundled
    digits), else read on demand (SplitImages). Both give the same values for the same index."""
    meta = load_meta(prepared_dir)
    shards = open_split(prepared_dir, split)
    shape = tuple(meta.meta["input_shape"])
    if not fits_in_memory(len(shards) * int(np.prod(shape)) * 4):
        return Split(SplitImages(shards, meta.mean, meta.std, shape), shards.y)
    if not len(shards):
        return Split(torch.zeros((0, *shape)), torch.zeros(0, dtype=torch.int64))
    return Split(shards.images(np.arange(len(shards)), meta.mean, meta.std), shards.y)
