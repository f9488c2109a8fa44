"""Splits on disk as shards: safetensors files of raw samples, written one at a time, read lazily.

A split is a directory of `shard-00000.safetensors`, `shard-00001.safetensors`, ... Each shard holds
`x`, the samples as the source gives them (uint8 pixels for images that come as bytes: a quarter of
float32, and what a JPEG decodes to; float32 otherwise), channels last (N, H, W, C) as images
decode, and `y`, their class indices. Readers see (N, C, H, W) like every model input. The
normalisation is applied when batches are read, with the statistics in the prepared data's
`meta.json`, so the shards do not depend on it.

Why safetensors shards rather than webdataset, litdata or mosaicml-streaming: the views and the
teacher-output cache address samples by index in any order (a seeded permutation per epoch, views
that point at their source sample), which tar streams read only front to back; safetensors files
are memory-mapped by the library, so reading one sample touches only its bytes and a reader's
resident memory stays at the pages it touches; they hold no code (no pickle) and the same samples
give the same bytes, as every other artifact of kdflow. A data loader's workers open the files
themselves, so nothing large crosses a process boundary.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import torch

from kdcore.artifacts import canonical_safetensors_header
from kdcore.errors import DataError

SHARD = "shard-{:05d}.safetensors"
SHARD_BYTES = 64 << 20  # a shard holds about this many bytes of samples


def write_shard(path: Path, x: torch.Tensor, y: torch.Tensor) -> str:
    """Writes one shard (samples `x` (N, H, W, C), labels `y` (N,)) and returns the sha256 of its samples and
    labels, in order. Whoever decoded the samples writes them: a prepare worker, or the one process."""
    from safetensors.torch import save_file

    x, y = x.contiguous(), y.to(torch.int64).contiguous()
    digest = hashlib.sha256()
    digest.update(x.numpy().data)
    digest.update(y.numpy().data)
    save_file({"x": x, "y": y}, str(path))
    canonical_safetensors_header(path)
    return digest.hexdigest()


def split_digest(shard_digests: list[str]) -> str:
    """A split's sha256: over its shards' digests in order (each over its samples and labels)."""
    return hashlib.sha256("".join(shard_digests).encode()).hexdigest()


def samples_per_shard(sample_shape: tuple[int, ...], dtype: torch.dtype) -> int:
    itemsize = torch.empty((), dtype=dtype).element_size()
    return max(1, SHARD_BYTES // max(1, int(np.prod(sample_shape)) * itemsize))


class ShardWriter:
    """Appends samples to a split directory, one shard file at a time (at most one shard in memory)."""

    def __init__(self, directory: Path, sample_shape: tuple[int, ...], dtype: torch.dtype) -> None:
        """`add` takes (N, H, W, C) chunks of `dtype`; `sample_shape` is one sample's (C, H, W)."""
        self.directory = Path(directory)
        self.directory.mkdir(parents=True, exist_ok=True)
        self.dtype = dtype
        self.sample_shape = tuple(sample_shape)
        self.per_shard = samples_per_shard(sample_shape, dtype)
        self._x: list[torch.Tensor] = []
        self._y: list[torch.Tensor] = []
        self._pending = 0
        self.shards = 0
        self.count = 0
        self.digests: list[str] = []

    def add(self, x: torch.Tensor, y: torch.Tensor) -> None:
        """Adds a chunk of samples (N, ...) with their labels (N,); writes every shard that fills."""
        if x.dtype != self.dtype:
            raise ValueError(f"shard samples are {self.dtype}, got {x.dtype}")
        start = 0
        while start < len(x):
            take = min(len(x) - start, self.per_shard - self._pending)
            self._x.append(x if take == len(x) else x[start : start + take])
            self._y.append(y if take == len(y) else y[start : start + take])
            self._pending += take
            start += take
            if self._pending == self.per_shard:
                self._flush()

    def _flush(self, final: bool = False) -> None:
        if not self._pending and not (final and self.shards == 0):
            return  # (an empty split still gets one empty shard: DVC and git keep no empty directory)
        if not self._x:
            self._x = [torch.zeros((0, *self.sample_shape[1:], self.sample_shape[0]), dtype=self.dtype)]
            self._y = [torch.zeros(0, dtype=torch.int64)]
        x = self._x[0] if len(self._x) == 1 else torch.cat(self._x)  # a whole chunk is written as it came
        y = self._y[0] if len(self._y) == 1 else torch.cat(self._y)
        self.digests.append(write_shard(self.directory / SHARD.format(self.shards), x, y))
        self.shards += 1
        self.count += len(y)
        self._x, self._y, self._pending = [], [], 0

    def sha256(self) -> str:
        """The split's digest (split_digest of its shards')."""
        return split_digest(self.digests)

    def close(self) -> int:
        """Writes the last, partly filled shard; returns the number of samples written."""
        self._flush(final=True)
        return self.count


DTYPES = {
    "U8": (np.uint8, torch.uint8),
    "F32": (np.float32, torch.float32),
    "F16": (np.float16, torch.float16),  # the top-K soft labels (kdcore/transfer/soft_labels.py)
    "I16": (np.int16, torch.int16),
}
SAMPLE_DTYPES = ("U8", "F32")  # what a split's samples are stored as


def _tensor_layout(path: Path, key: str) -> tuple[str, tuple[int, ...], int]:
    """(dtype, shape, byte offset in the file) of one tensor, from the safetensors header alone."""
    with open(path, "rb") as fh:
        size = int.from_bytes(fh.read(8), "little")
        if not 0 < size < 100_000_000:
            raise ValueError(f"header size {size}")
        header = json.loads(fh.read(size))
    entry = header[key]
    return entry["dtype"], tuple(entry["shape"]), 8 + size + entry["data_offsets"][0]


class ShardedSplit:
    """One split read from its shards: labels in memory (small), samples read on demand.

    `raw(index)` gives the samples as stored; `images(index)` as float32, pixels scaled to [0, 1]
    (uint8 / 255) and standardised with `mean` and `std` when given. Rows are read with plain
    positioned reads (`os.pread`) at offsets the shard's header gives, not through a memory map:
    a mapped file counts the pages it touched as the process's resident memory until it is unmapped,
    so an epoch over mapped shards looked as large as the data. File descriptors are opened per
    process, so a DataLoader's workers open their own."""

    def __init__(self, directory: Path) -> None:
        self.directory = Path(directory)
        if not self.directory.is_dir():
            raise DataError(f"{self.directory}: missing; run the prepare stage first")
        self.files = sorted(self.directory.glob("shard-*.safetensors"))
        from safetensors import safe_open

        counts, labels, self.starts = [], [], []
        self.stored, self.sample_shape = "U8", ()
        for path in self.files:
            try:
                with safe_open(str(path), framework="pt") as handle:
                    y = handle.get_tensor("y")
                self.stored, shape, start = _tensor_layout(path, "x")
            except Exception as err:  # safetensors' own error types, a bad header: a damaged or foreign file
                raise DataError(f"{path}: not a readable shard ({err}); rerun prepare") from None
            if self.stored not in SAMPLE_DTYPES:
                raise DataError(f"{path}: samples of type {self.stored}; a shard holds U8 or F32")
            self.sample_shape = shape[1:]  # (H, W, C)
            self.starts.append(start)
            counts.append(len(y))
            labels.append(y)
        self.y = torch.cat(labels) if labels else torch.zeros(0, dtype=torch.int64)
        self.offsets = np.concatenate([[0], np.cumsum(counts)]).astype(np.int64)
        self.np_dtype, self.dtype = DTYPES[self.stored]
        self.row_bytes = int(np.prod(self.sample_shape)) * np.dtype(self.np_dtype).itemsize
        self._fds: dict[int, int] = {}
        self._pid = None

    def __len__(self) -> int:
        return len(self.y)

    def __getstate__(self) -> dict:
        return {**self.__dict__, "_fds": {}, "_pid": None}  # reopened in the receiving process

    def __del__(self) -> None:
        if getattr(self, "_pid", None) == os.getpid():  # not set when __init__ refused the directory
            for fd in self._fds.values():
                with contextlib.suppress(OSError):
                    os.close(fd)

    def _fd(self, shard: int) -> int:
        if self._pid != os.getpid():
            self._fds, self._pid = {}, os.getpid()
        if shard not in self._fds:
            self._fds[shard] = os.open(self.files[shard], os.O_RDONLY)
        return self._fds[shard]

    def _read(self, shard: int, first: int, count: int) -> np.ndarray:
        """`count` rows of a shard from row `first`, one positioned read."""
        offset = self.starts[shard] + first * self.row_bytes
        data = os.pread(self._fd(shard), count * self.row_bytes, offset)
        if len(data) != count * self.row_bytes:
            raise DataError(f"{self.files[shard]}: cut short; rerun prepare")
        return np.frombuffer(data, dtype=self.np_dtype).reshape(count, *self.sample_shape)

    def raw(self, index: torch.Tensor | np.ndarray | list[int]) -> torch.Tensor:
        """The stored samples at `index` (any order, repeats allowed), in that order, (N, H, W, C)."""
        index = np.asarray(index, dtype=np.int64).reshape(-1)
        if len(index) and (index.min() < 0 or index.max() >= len(self)):
            raise IndexError(f"{self.directory}: index out of range 0..{len(self) - 1}")
        out = np.empty((len(index), *self.sample_shape), dtype=self.np_dtype)
        shard_of = np.searchsorted(self.offsets, index, side="right") - 1
        for shard in np.unique(shard_of).tolist():
            where = np.flatnonzero(shard_of == shard)
            local = index[where] - self.offsets[shard]
            lo, hi = int(local.min()), int(local.max()) + 1
            if hi - lo <= 4 * len(local):  # dense: one read of the range
                out[where] = self._read(shard, lo, hi - lo)[local - lo]
            else:  # sparse (a shuffled batch): row by row
                for j, row in zip(where.tolist(), local.tolist(), strict=True):
                    out[j] = self._read(shard, row, 1)[0]
        return torch.from_numpy(out)

    def images(
        self, index: torch.Tensor | np.ndarray | list[int], mean: torch.Tensor | None = None, std=None
    ) -> torch.Tensor:
        """float32 (N, C, H, W) samples at `index`: uint8 pixels scaled to [0, 1], then (x - mean) / std
        per channel; one pass converts type and layout."""
        stored = self.raw(index)
        n, h, w, c = stored.shape
        x = torch.empty((n, c, h, w), dtype=torch.float32)
        x.copy_(stored.permute(0, 3, 1, 2))
        if stored.dtype == torch.uint8:
            x.div_(255.0)
        if mean is not None:
            x.sub_(mean.view(1, -1, 1, 1)).div_(std.view(1, -1, 1, 1))
        return x

    def chunks(self, size: int = 4096) -> Iterator[tuple[int, torch.Tensor]]:
        """(first index, raw samples) of consecutive chunks of the split, in order."""
        for first in range(0, len(self), size):
            yield first, self.raw(np.arange(first, min(first + size, len(self))))


class FileRows:
    """The rows of one tensor in a safetensors file, read on demand with positioned reads and indexed
    like a tensor (the synthetic images: as large as the data set they stand in for)."""

    def __init__(self, path: Path, key: str) -> None:
        self.path, self.key = Path(path), key
        if not self.path.is_file():
            raise DataError(f"{self.path}: missing; run the stage that writes it first")
        try:
            stored, shape, self.start = _tensor_layout(self.path, key)
        except Exception as err:  # a bad header: a damaged or foreign file
            raise DataError(
                f"{self.path}: not a readable safetensors file ({err}); rerun the stage that writes it"
            ) from None
        if stored not in DTYPES:
            raise DataError(f"{self.path}: {key} is of type {stored}; expected one of {', '.join(DTYPES)}")
        self.np_dtype = DTYPES[stored][0]
        self.shape = torch.Size(shape)
        self.row_bytes = int(np.prod(shape[1:])) * np.dtype(self.np_dtype).itemsize
        self.nbytes = self.row_bytes * shape[0]

    def tensor(self, key: str) -> torch.Tensor:
        """Another tensor of the same file, whole."""
        from safetensors import safe_open

        with safe_open(str(self.path), framework="pt") as handle:
            return handle.get_tensor(key)

    def __len__(self) -> int:
        return self.shape[0]

    def _rows(self, fh, first: int, count: int) -> np.ndarray:
        fh.seek(self.start + first * self.row_bytes)
        data = fh.read(count * self.row_bytes)
        return np.frombuffer(data, dtype=self.np_dtype).reshape(count, *self.shape[1:])

    def __getitem__(self, index) -> torch.Tensor:
        if isinstance(index, slice):
            index = np.arange(len(self))[index]
        rows = np.asarray(index, dtype=np.int64).reshape(-1)
        out = np.empty((len(rows), *self.shape[1:]), dtype=self.np_dtype)
        with open(self.path, "rb") as fh:
            if len(rows) and rows.max() - rows.min() + 1 <= 4 * len(rows):  # dense: one read
                lo = int(rows.min())
                out[:] = self._rows(fh, lo, int(rows.max()) + 1 - lo)[rows - lo]
            else:
                for j, row in enumerate(rows.tolist()):
                    out[j] = self._rows(fh, row, 1)[0]
        return torch.from_numpy(out)
