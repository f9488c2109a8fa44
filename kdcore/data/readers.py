"""Data sources read by index: what `prepare` streams from, so no stage holds the whole data set.

`open_source` gives a reader for any registered source: image folders decode one image at a time
(in worker processes when prepare asks), uncompressed IDX files are memory-mapped, and data that a
loader gives whole (the bundled sets, an .npz, any other registered source) is read from memory.
Samples come channels last, (k, H, W, C), as images decode.
"""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np
import torch

from kdcore.data.sources import (
    _IDX_DTYPES,
    IMAGE_SUFFIXES,
    DataHeader,
    RawData,
    _idx_dims,
    _index_labels,
    _sample_shape,
    _scale,
    _to_nchw,
    load_source,
    published_rows,
    read_idx,
)
from kdcore.errors import DataError


class SourceReader:
    """Samples of a data source read by index, so a stage never needs the whole data set in memory.

    `dtype` is how samples are stored: uint8 for pixels that come as bytes (JPEG, PNG, IDX u8, MNIST),
    float32 otherwise; `read(index)` gives (k, H, W, C), channels last as images decode (no transpose
    on the way to disk), in that dtype, pixels of uint8 data in 0..255 (divide by 255 for [0, 1]), in
    the order of `index`."""

    header: DataHeader
    ids: list[str]
    dtype: torch.dtype
    decodes = False  # whether reading decodes files (worth worker processes)

    def read(self, index: np.ndarray) -> torch.Tensor:
        raise NotImplementedError

    def __len__(self) -> int:
        return len(self.ids)


class ArrayReader(SourceReader):
    """Data that a loader gives whole (bundled sets, .npz): stored as uint8 when every value is a
    multiple of 1/255 in [0, 1] (pixels that were bytes), else float32."""

    def __init__(self, raw: RawData) -> None:
        images = raw.images
        as_bytes = images * 255.0
        if (
            raw.kind == "image"
            and bool(((as_bytes - as_bytes.round()).abs() < 1e-3).all())
            and bool(((images >= 0) & (images <= 1)).all())
        ):
            self.data, self.dtype = as_bytes.round().to(torch.uint8), torch.uint8
        else:
            self.data, self.dtype = images.float(), torch.float32
        self.ids = raw.ids
        self.header = DataHeader(raw.labels, raw.class_names, raw.kind, tuple(images.shape[1:]))

    def read(self, index: np.ndarray) -> torch.Tensor:
        return self.data[torch.as_tensor(np.asarray(index, dtype=np.int64))].permute(0, 2, 3, 1).contiguous()


class IdxReader(SourceReader):
    """MNIST-format files: uncompressed ones memory-mapped (only the rows read are touched), gzipped
    ones decompressed once (the format has no index into a compressed stream)."""

    def __init__(self, path: Path) -> None:
        path = Path(path)
        if not path.is_dir():
            raise DataError(f"data.path {path}: not a directory of IDX files")
        image_files = sorted(p for p in path.iterdir() if "-images-idx" in p.name)
        if not image_files:
            raise DataError(f"data.path {path}: no '*-images-idx*' file found")
        self.parts: list[np.ndarray] = []
        labels, self.ids = [], []
        for img_file in image_files:
            prefix = img_file.name.split("-images-idx")[0]
            label_files = sorted(path.glob(f"{prefix}-labels-idx*"))
            if not label_files:
                raise DataError(f"{img_file}: no matching '{prefix}-labels-idx*' file")
            x, y = _idx_array(img_file), read_idx(label_files[0])
            if len(x) != len(y):
                raise DataError(f"{img_file}: {len(x)} images but {label_files[0].name} has {len(y)} labels")
            if x.ndim not in (3, 4):
                _to_nchw(x, str(img_file))  # names the shape
            self.parts.append(x)
            labels.append(y)
            self.ids += [f"{prefix}-{i:05d}" for i in range(len(y))]
        if len({x.shape[1:] for x in self.parts}) > 1:
            raise DataError(f"data.path {path}: IDX files hold images of different shapes")
        self.offsets = np.cumsum([0] + [len(x) for x in self.parts])
        self.dtype = torch.uint8 if self.parts[0].dtype == np.uint8 else torch.float32
        index, names = _index_labels(np.concatenate(labels), str(path))
        prefixes = [f.name.split("-images-idx")[0] for f in image_files]
        test = published_rows(prefixes, [len(x) for x in self.parts])
        self.header = DataHeader(index, names, "image", _sample_shape((1, *self.parts[0].shape[1:])), test)
        self.where = f"data.path {path}"

    def read(self, index: np.ndarray) -> torch.Tensor:
        index = np.asarray(index, dtype=np.int64)
        part = np.searchsorted(self.offsets, index, side="right") - 1
        rows = [self.parts[p][i - self.offsets[p]] for p, i in zip(part.tolist(), index.tolist(), strict=True)]
        x = np.stack(rows) if rows else np.zeros((0, *self.parts[0].shape[1:]), self.parts[0].dtype)
        x = _to_nchw(x, self.where).transpose(0, 2, 3, 1)  # the layout the files imply, channels last
        if self.dtype == torch.uint8:
            return torch.from_numpy(np.ascontiguousarray(x))
        return torch.from_numpy(_scale(np.ascontiguousarray(x), self.where))


def _idx_array(path: Path) -> np.ndarray:
    """An IDX file's array: memory-mapped when uncompressed, else read whole."""
    if path.suffix == ".gz":
        return read_idx(path)
    dims = _idx_dims(path)
    if dims is None:
        return read_idx(path)  # names the defect
    with open(path, "rb") as fh:
        dtype = np.dtype(_IDX_DTYPES[fh.read(4)[2]])
    offset = 4 + 4 * len(dims)
    expected = int(np.prod(dims)) * dtype.itemsize
    if path.stat().st_size != offset + expected:
        return read_idx(path)  # names the defect
    return np.memmap(path, dtype=dtype, mode="r", offset=offset, shape=tuple(dims))


class FolderReader(SourceReader):
    """An image folder: each image decoded (and resized) when it is read, never all at once."""

    decodes = True

    def __init__(self, path: Path, image_size: int | None, channels: int) -> None:
        path = Path(path)
        if not path.is_dir():
            raise DataError(f"data.path {path}: not a directory")
        class_dirs = sorted(p for p in path.iterdir() if p.is_dir() and not p.name.startswith("."))
        if not class_dirs:
            raise DataError(f"data.path {path}: no class subdirectories")
        self.files: list[Path] = []
        labels = []
        for label, class_dir in enumerate(class_dirs):
            files = sorted(f for f in class_dir.rglob("*") if f.suffix.lower() in IMAGE_SUFFIXES)
            if not files:
                raise DataError(f"{class_dir}: class directory holds no images")
            self.files += files
            labels += [label] * len(files)
        self.ids = [str(f.relative_to(path)) for f in self.files]
        self.mode, self.size, self.dtype = ("L" if channels == 1 else "RGB"), image_size, torch.uint8
        first = self._decode(0)
        self.shape = first.shape
        self.header = DataHeader(
            torch.tensor(labels, dtype=torch.int64), [d.name for d in class_dirs], "image",
            (channels, first.shape[0], first.shape[1]),
        )  # fmt: skip

    def _decode(self, i: int) -> np.ndarray:
        from PIL import Image, UnidentifiedImageError

        f = self.files[i]
        try:
            with Image.open(io.BytesIO(f.read_bytes())) as img:  # one read, not one per 4 KiB block
                if img.mode != self.mode:
                    img = img.convert(self.mode)
                if self.size is not None and img.size != (self.size, self.size):
                    img = img.resize((self.size, self.size), Image.BILINEAR)
                return np.asarray(img, dtype=np.uint8)
        except UnidentifiedImageError:
            raise DataError(f"{f}: not a readable image (no image format PIL knows)") from None
        except OSError as err:
            raise DataError(f"{f}: not a readable image ({err})") from None

    def read(self, index: np.ndarray) -> torch.Tensor:
        index = np.asarray(index, dtype=np.int64)
        out = np.empty((len(index), *self.shape), np.uint8)  # decoded straight into the chunk, channels last
        for j, i in enumerate(index.tolist()):
            arr = self._decode(i)
            if arr.shape != self.shape:
                raise DataError(
                    f"{self.files[i]}: image is {arr.shape[1::-1]} but earlier images are {self.shape[1::-1]}; "
                    "set data.image_size to resize"
                )
            out[j] = arr
        return torch.from_numpy(out.reshape(len(index), self.shape[0], self.shape[1], -1))


def open_source(
    source: str, path: Path | None = None, image_size: int | None = None, channels: int = 1
) -> SourceReader:
    """A reader of `source` by index: image folders and IDX files read lazily; data a loader gives
    whole (bundled, .npz, any other registered source) from memory."""
    if source == "imagefolder":
        return FolderReader(path, image_size, channels)
    if source == "idx":
        return IdxReader(path)
    return ArrayReader(load_source(source, path, image_size, channels))
