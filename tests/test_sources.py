"""Every data source, read from a tiny file the test makes, and the errors bad files give."""

from __future__ import annotations

import gzip
import struct
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from kdcore.data.sources import class_names, data_header, load_source, read_idx
from kdcore.errors import DataError


def write_idx(path: Path, array: np.ndarray) -> None:
    header = bytes([0, 0, 0x08, array.ndim]) + struct.pack(f">{array.ndim}I", *array.shape)
    payload = header + array.astype(np.uint8).tobytes()
    if path.suffix == ".gz":
        with gzip.open(path, "wb") as fh:
            fh.write(payload)
    else:
        path.write_bytes(payload)


def test_mnist5k_is_the_real_bundled_data() -> None:
    data = load_source("mnist5k")
    assert data.images.shape == (5000, 1, 28, 28)
    assert torch.bincount(data.labels).tolist() == [500] * 10
    assert data.images.min() >= 0.0 and data.images.max() <= 1.0
    assert len(set(data.ids)) == 5000


def test_digits() -> None:
    data = load_source("digits")
    assert data.images.shape == (1797, 1, 8, 8) and data.class_names == [str(i) for i in range(10)]
    assert data.images.max() == 1.0


@pytest.mark.parametrize("layout", ["nhw", "nhwc", "nchw"])
def test_npz_layouts(tmp_path: Path, layout: str) -> None:
    rng = np.random.default_rng(0)
    x = rng.integers(0, 256, size=(6, 5, 4), dtype=np.uint8)
    if layout == "nhwc":
        x = np.repeat(x[..., None], 3, axis=-1)
    elif layout == "nchw":
        x = np.repeat(x[:, None], 3, axis=1)
    np.savez(tmp_path / "d.npz", x=x, y=np.array([5, 7, 5, 7, 9, 9]))
    data = load_source("npz", tmp_path / "d.npz")
    channels = 1 if layout == "nhw" else 3
    assert data.images.shape == (6, channels, 5, 4)
    assert data.labels.tolist() == [0, 1, 0, 1, 2, 2] and data.class_names == ["5", "7", "9"]
    assert torch.allclose(
        data.images[0, 0],
        torch.from_numpy(x[0] if layout == "nhw" else (x[0, ..., 0] if layout == "nhwc" else x[0, 0])).float() / 255,
    )


def test_npz_errors(tmp_path: Path) -> None:
    np.savez(tmp_path / "no_y.npz", x=np.zeros((2, 3, 3)))
    with pytest.raises(DataError, match=r"no_y.npz: missing array\(s\) \['y'\]"):
        load_source("npz", tmp_path / "no_y.npz")
    np.savez(tmp_path / "short.npz", x=np.zeros((2, 3, 3)), y=np.array([1]))
    with pytest.raises(DataError, match="x has 2 rows but y has 1"):
        load_source("npz", tmp_path / "short.npz")
    np.savez(tmp_path / "floaty.npz", x=np.zeros((2, 3, 3)), y=np.array([0.5, 1.0]))
    with pytest.raises(DataError, match="labels must be integers"):
        load_source("npz", tmp_path / "floaty.npz")
    (tmp_path / "bad.npz").write_text("not a zip")
    with pytest.raises(DataError, match="bad.npz: not an .npz archive"):
        load_source("npz", tmp_path / "bad.npz")
    with pytest.raises(DataError, match="no such .npz"):
        load_source("npz", tmp_path / "absent.npz")


@pytest.mark.parametrize("suffix", ["", ".gz"])
def test_idx_pairs(tmp_path: Path, suffix: str) -> None:
    rng = np.random.default_rng(1)
    for prefix, n in (("train", 5), ("t10k", 3)):
        write_idx(tmp_path / f"{prefix}-images-idx3-ubyte{suffix}", rng.integers(0, 256, (n, 4, 4)))
        write_idx(tmp_path / f"{prefix}-labels-idx1-ubyte{suffix}", np.arange(n) % 2)
    data = load_source("idx", tmp_path)
    assert data.images.shape == (8, 1, 4, 4)
    assert data.ids[0] == "t10k-00000" and data.ids[-1] == "train-00004"
    assert data.labels.tolist() == [0, 1, 0, 0, 1, 0, 1, 0]


def test_idx_errors(tmp_path: Path) -> None:
    (tmp_path / "x-images-idx3-ubyte").write_bytes(b"\x08\x08\x08\x03garbage")
    with pytest.raises(DataError, match="bad magic number"):
        read_idx(tmp_path / "x-images-idx3-ubyte")
    write_idx(tmp_path / "x-images-idx3-ubyte", np.zeros((2, 3, 3)))
    with pytest.raises(DataError, match="no matching 'x-labels-idx\\*' file"):
        load_source("idx", tmp_path)
    truncated = tmp_path / "y-labels-idx1-ubyte"
    truncated.write_bytes(bytes([0, 0, 8, 1]) + struct.pack(">I", 10) + b"\x00" * 4)
    with pytest.raises(DataError, match="header says"):
        read_idx(truncated)
    with pytest.raises(DataError, match="not a directory"):
        load_source("idx", tmp_path / "missing")


def make_folder(root: Path, sizes: dict[str, tuple[int, int]]) -> None:
    rng = np.random.default_rng(2)
    for cls, size in sizes.items():
        (root / cls).mkdir(parents=True)
        for i in range(3):
            Image.fromarray(rng.integers(0, 256, (size[1], size[0], 3), dtype=np.uint8)).save(root / cls / f"{i}.png")


def test_imagefolder_gray_and_rgb(tmp_path: Path) -> None:
    make_folder(tmp_path, {"cat": (6, 5), "dog": (6, 5)})
    gray = load_source("imagefolder", tmp_path, channels=1)
    assert gray.images.shape == (6, 1, 5, 6) and gray.class_names == ["cat", "dog"]
    assert gray.ids[0] == "cat/0.png" and gray.labels.tolist() == [0, 0, 0, 1, 1, 1]
    rgb = load_source("imagefolder", tmp_path, channels=3, image_size=4)
    assert rgb.images.shape == (6, 3, 4, 4)


def test_imagefolder_errors(tmp_path: Path) -> None:
    make_folder(tmp_path, {"a": (6, 5), "b": (7, 5)})
    with pytest.raises(DataError, match="set data.image_size"):
        load_source("imagefolder", tmp_path)
    (tmp_path / "a" / "9.png").write_text("not an image")
    with pytest.raises(DataError, match=r"9.png: not a readable image"):
        load_source("imagefolder", tmp_path, image_size=4)
    (tmp_path / "empty").mkdir()
    (tmp_path / "a" / "9.png").unlink()
    with pytest.raises(DataError, match="empty: class directory holds no images"):
        load_source("imagefolder", tmp_path, image_size=4)


def test_class_names_without_decoding_images_match_the_loaders(tmp_path: Path) -> None:
    np.savez(tmp_path / "d.npz", x=np.zeros((4, 3, 3), np.uint8), y=np.array([7, 2, 7, 2]))
    np.savez(tmp_path / "hwc.npz", x=np.zeros((2, 5, 6, 3), np.uint8), y=np.array([0, 1]))
    np.savez(tmp_path / "vectors.npz", x=np.zeros((2, 7), np.float32), y=np.array([0, 1]))
    (tmp_path / "idx").mkdir()
    write_idx(tmp_path / "idx" / "train-images-idx3-ubyte", np.zeros((3, 4, 4)))
    write_idx(tmp_path / "idx" / "train-labels-idx1-ubyte", np.array([4, 1, 4]))
    make_folder(tmp_path / "folder", {"zebra": (4, 4), "ant": (4, 4)})
    cases = [
        ("npz", tmp_path / "d.npz", ["2", "7"]),
        ("idx", tmp_path / "idx", ["1", "4"]),
        ("imagefolder", tmp_path / "folder", ["ant", "zebra"]),
        ("digits", None, [str(i) for i in range(10)]),
    ]
    for source, path, names in cases:
        assert class_names(source, path) == load_source(source, path).class_names == names, source
    for source, path in [
        *((s, p) for s, p, _ in cases),
        ("npz", tmp_path / "hwc.npz"),
        ("npz", tmp_path / "vectors.npz"),
    ]:
        # the sample shape the architectures are checked against, from headers alone
        assert data_header(source, path).input_shape == tuple(load_source(source, path).images.shape[1:]), source
    assert data_header("imagefolder", tmp_path / "folder", image_size=3, channels=3).input_shape == (3, 3, 3)
    with pytest.raises(DataError, match=r"train-labels-idx1-ubyte: not an \.npz archive"):
        class_names("npz", tmp_path / "idx" / "train-labels-idx1-ubyte")
