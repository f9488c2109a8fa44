"""Splits as shards: written a chunk at a time, read by index in any order, the same values as the
loaders give whole, whatever the number of decoding workers."""

from __future__ import annotations

import json
import pickle
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
from PIL import Image

import kdcore.data.shards as shards
from kdcore.data.readers import ArrayReader, FolderReader, IdxReader, open_source
from kdcore.data.shards import FileRows, ShardedSplit, ShardWriter
from kdcore.data.sources import load_source
from tests.test_sources import write_idx


def test_samples_come_back_by_index_in_any_order(tmp_path: Path, monkeypatch) -> None:
    monkeypatch.setattr(shards, "SHARD_BYTES", 200)  # 12 samples of 16 bytes per shard: 25 shards
    x = torch.randint(0, 256, (300, 4, 4, 1), dtype=torch.uint8)
    y = torch.arange(300) % 10
    writer = ShardWriter(tmp_path / "split", (1, 4, 4), torch.uint8)
    for first in (0, 7, 100, 299):  # chunks of any size
        writer.add(
            x[first : {0: 7, 7: 100, 100: 299, 299: 300}[first]], y[first : {0: 7, 7: 100, 100: 299, 299: 300}[first]]
        )
    assert writer.close() == 300 and writer.shards == 25
    split = ShardedSplit(tmp_path / "split")
    assert len(split) == 300 and torch.equal(split.y, y)
    order = np.random.default_rng(0).permutation(300)
    for index in (order[:50], np.arange(300), np.array([299, 0, 5, 5]), np.arange(40, 60)):
        assert torch.equal(split.raw(index), x[index])
    images = split.images([3, 1], torch.tensor([0.5]), torch.tensor([0.25]))
    assert images.shape == (2, 1, 4, 4) and images.is_contiguous()  # (N, C, H, W) for the models
    assert torch.allclose(images, (x[[3, 1]].permute(0, 3, 1, 2).float() / 255 - 0.5) / 0.25)
    again = pickle.loads(pickle.dumps(split))  # as a DataLoader worker receives it: files reopened there
    assert torch.equal(again.raw(order[:9]), x[order[:9]])
    assert split.raw([]).shape == (0, 4, 4, 1)
    ShardWriter(tmp_path / "empty", (1, 4, 4), torch.uint8).close()
    assert len(ShardedSplit(tmp_path / "empty")) == 0  # one empty shard: DVC and git keep no empty directory


def test_readers_give_what_the_loaders_give(tmp_path: Path) -> None:
    rng = np.random.default_rng(1)
    for cls in ("ant", "bee"):
        (tmp_path / "folder" / cls).mkdir(parents=True)
        for i in range(4):
            Image.fromarray(rng.integers(0, 256, (6, 5, 3), dtype=np.uint8)).save(
                tmp_path / "folder" / cls / f"{i}.png"
            )
    (tmp_path / "idx").mkdir()
    write_idx(tmp_path / "idx" / "train-images-idx3-ubyte", rng.integers(0, 256, (7, 5, 5)))
    write_idx(tmp_path / "idx" / "train-labels-idx1-ubyte", np.array([1, 2, 1, 2, 1, 2, 1]))
    write_idx(tmp_path / "idx" / "t10k-images-idx3-ubyte.gz", rng.integers(0, 256, (3, 5, 5)))
    write_idx(tmp_path / "idx" / "t10k-labels-idx1-ubyte.gz", np.array([2, 1, 2]))
    np.savez(tmp_path / "v.npz", x=rng.normal(size=(6, 3)).astype(np.float32), y=np.arange(6) % 2)
    cases = [
        ("imagefolder", tmp_path / "folder", FolderReader, torch.uint8, {"channels": 3}),
        ("imagefolder", tmp_path / "folder", FolderReader, torch.uint8, {"channels": 1, "image_size": 4}),
        ("idx", tmp_path / "idx", IdxReader, torch.uint8, {}),
        ("npz", tmp_path / "v.npz", ArrayReader, torch.float32, {}),
        ("mnist5k", None, ArrayReader, torch.uint8, {}),
    ]
    for source, path, kind, dtype, options in cases:
        reader = open_source(source, path, **options)
        whole = load_source(source, path, **options)
        assert isinstance(reader, kind) and reader.dtype == dtype, source
        assert reader.ids == whole.ids and torch.equal(reader.header.labels, whole.labels), source
        assert reader.header.input_shape == tuple(whole.images.shape[1:]), source
        index = np.random.default_rng(0).permutation(len(whole.ids))[:5]
        got = reader.read(index).permute(0, 3, 1, 2).float()
        got = got / 255 if dtype == torch.uint8 else got
        assert torch.allclose(got, whole.images[index], atol=1e-6), source
    assert isinstance(IdxReader(tmp_path / "idx").parts[1], np.memmap)  # uncompressed files are mapped


def test_prepare_writes_the_same_shards_with_any_number_of_decoding_workers(tmp_path: Path) -> None:
    from kdcore.config import parse_params
    from kdcore.stages import get_stage
    from tests.conftest import tiny_raw

    rng = np.random.default_rng(3)
    for cls in "abc":
        (tmp_path / "folder" / cls).mkdir(parents=True)
        for i in range(40):
            Image.fromarray(rng.integers(0, 256, (12, 12, 3), dtype=np.uint8)).save(
                tmp_path / "folder" / cls / f"{i}.png"
            )
    hashes = []
    for workers in (0, 2):
        root = tmp_path / f"w{workers}"
        raw = tiny_raw(root, data__source="imagefolder", data__path=str(tmp_path / "folder"), data__channels=3,
                       data__workers=workers, data__splits={"teacher_train": 60, "transfer": 30, "test": 20,
                                                            "validation": 10})  # fmt: skip
        get_stage("prepare")(parse_params(raw))
        meta = (root / "data/prepared/meta.json").read_text()
        hashes.append(meta)
    assert hashes[0] == hashes[1]


def test_file_rows_read_a_tensor_by_row(tmp_path: Path) -> None:
    from kdcore.artifacts import save_tensors

    x = torch.randn(10, 1, 3, 3)
    save_tensors(tmp_path / "images.safetensors", {"x": x, "predicted": torch.arange(10)})
    rows = FileRows(tmp_path / "images.safetensors", "x")
    assert len(rows) == 10 and rows.shape == x.shape and rows.nbytes == x.numel() * 4
    assert torch.equal(rows[[7, 2, 2]], x[[7, 2, 2]]) and torch.equal(rows[2:5], x[2:5])
    assert torch.equal(rows.tensor("predicted"), torch.arange(10))
    with pytest.raises(Exception, match="missing"):
        FileRows(tmp_path / "nowhere.safetensors", "x")


def test_a_broken_image_stops_prepare_in_one_line_from_any_worker(tmp_path: Path, capsys) -> None:
    from kdcore.__main__ import main as stage_main
    from tests.conftest import tiny_raw, write_params

    rng = np.random.default_rng(4)
    for cls in "ab":
        (tmp_path / "folder" / cls).mkdir(parents=True)
        for i in range(30):
            Image.fromarray(rng.integers(0, 256, (8, 8, 3), dtype=np.uint8)).save(
                tmp_path / "folder" / cls / f"{i}.png"
            )
    (tmp_path / "folder" / "b" / "29.png").write_bytes(b"not an image")
    for workers in (0, 2):
        splits = {"teacher_train": 30, "transfer": 14, "test": 14}
        raw = tiny_raw(tmp_path / f"w{workers}", data__source="imagefolder", data__path=str(tmp_path / "folder"),
                       data__workers=workers, data__splits=splits)  # fmt: skip
        params = write_params(tmp_path / f"p{workers}.yaml", raw)
        capsys.readouterr()
        assert stage_main(["prepare", "--params", str(params)]) == 2
        err = capsys.readouterr().err.strip().splitlines()
        assert err == [f"kdflow prepare: error: {tmp_path / 'folder/b/29.png'}: not a readable image (no image format "
                       "PIL knows)"], err  # fmt: skip
        assert not (tmp_path / f"w{workers}" / "data/prepared").exists()


def test_the_published_test_set_is_the_test_split_whole(tmp_path: Path, capsys) -> None:
    """IDX data with its own train-* / t10k-* files (MNIST, Fashion-MNIST): with data.published_test the
    test split is the t10k set, all of it, so figures compare with published ones; the others come from
    the train files. Wrong sizes and sources without such a set end in one line before any work."""
    from flows.kdflow import main as kdflow
    from kdcore.__main__ import main as stage_main
    from kdcore.data.prepared import load_split
    from tests.conftest import tiny_raw, write_params

    rng = np.random.default_rng(5)
    (tmp_path / "idx").mkdir()
    train = rng.integers(0, 256, (120, 8, 8))
    t10k = rng.integers(0, 256, (30, 8, 8))
    write_idx(tmp_path / "idx" / "train-images-idx3-ubyte", train)
    write_idx(tmp_path / "idx" / "train-labels-idx1-ubyte", np.arange(120) % 3)
    write_idx(tmp_path / "idx" / "t10k-images-idx3-ubyte.gz", t10k)
    write_idx(tmp_path / "idx" / "t10k-labels-idx1-ubyte.gz", np.arange(30) % 3)
    splits = {"teacher_train": 60, "transfer": 40, "test": 30, "validation": 20}
    raw = tiny_raw(tmp_path / "run", data__source="idx", data__path=str(tmp_path / "idx"), data__splits=splits,
                   data__published_test=True)  # fmt: skip
    params = write_params(tmp_path / "params.yaml", raw)
    assert kdflow(["check", "--params", str(params)]) == 0
    assert stage_main(["prepare", "--params", str(params)]) == 0
    test = load_split(tmp_path / "run/data/prepared", "test")
    meta = json.loads((tmp_path / "run/data/prepared/meta.json").read_text())
    manifest = pd.read_csv(tmp_path / "run/data/prepared/manifest.csv")
    ids = manifest.loc[manifest["split"] == "test", "sample_id"].tolist()
    assert ids == [f"t10k-{i:05d}" for i in range(30)]  # every t10k image, in order, and nothing else
    published = (torch.from_numpy(t10k).float() / 255 - meta["mean"][0]) / meta["std"][0]
    assert torch.allclose(test.x[:, 0], published, atol=1e-5)
    idx = {"data__source": "idx", "data__path": str(tmp_path / "idx"), "data__splits": splits,
           "data__published_test": True}  # fmt: skip
    cases = [
        ({"data__splits": {**splits, "test": 25}}, "data.splits.test: 25, but data.published_test takes", "test: 30"),
        ({"data__source": "digits", "data__path": None}, "data.published_test: data.source digits", "set it to false"),
    ]
    capsys.readouterr()
    for change, key, fix in cases:
        params = write_params(tmp_path / "bad.yaml", tiny_raw(tmp_path / "bad", **{**idx, **change}))
        assert kdflow(["check", "--params", str(params)]) == 2
        err = capsys.readouterr().err.strip().splitlines()
        assert len(err) == 1 and key in err[0] and fix in err[0], err


def test_a_large_manifest_is_checked_part_by_part(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Above CHECKED_ROWS samples the per-sample checks run on parts of the manifest: a bad sample is still
    found, and the part that holds it is named."""
    import kdcore.stages.prepare as prepare_stage
    from kdcore.config import parse_params
    from kdcore.errors import ValidationFailed
    from kdcore.stages import get_stage
    from tests.conftest import tiny_raw

    monkeypatch.setattr(prepare_stage, "CHECKED_ROWS", 50)
    rng = np.random.default_rng(0)
    x = rng.random((200, 6, 6)).astype(np.float32)
    np.savez(tmp_path / "good.npz", x=x, y=np.arange(200) % 4)
    raw = tiny_raw(tmp_path, data__source="npz", data__path=str(tmp_path / "good.npz"))
    raw["data"]["splits"] = {"teacher_train": 80, "transfer": 60, "test": 60}
    get_stage("prepare")(parse_params(raw))  # four parts, every check passes
    report = (tmp_path / "reports/validation/prepare.html").read_text()
    assert "manifest rows 150-199" in report and "sample_id" in report

    x[123, 2, 2] = np.nan
    np.savez(tmp_path / "bad.npz", x=x, y=np.arange(200) % 4)
    raw["data"]["path"] = str(tmp_path / "bad.npz")
    failed = r"1 of \d+ data checks failed: manifest rows \d+-\d+: expect_column_values_to_be_between\(column=pixel_nan"
    with pytest.raises(ValidationFailed, match=failed):
        get_stage("prepare")(parse_params(raw))
