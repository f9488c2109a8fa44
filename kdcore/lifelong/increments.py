"""New data batches: from the landing place to accepted, versioned increments.

A batch arrives in the landing place as an `.npz` file (x, y), a directory of IDX files or an image
folder (one directory per class name). `accept` reads it with the pipeline's own data sources,
checks it against what the student takes (Great Expectations: input shape, class names the
student knows, finite values in range, enough samples to hold some out), normalises it with the
prepared data's statistics and writes `<increments_dir>/<name>/` (train and held-out test tensors,
meta.json) in one rename, so a rejected batch leaves nothing behind. The flow then DVC-tracks the
directory and lists the name under lifelong.increments.
"""

from __future__ import annotations

import hashlib
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import torch

from kdcore.artifacts import load_tensors, read_json, save_tensors, sha256_tensors, write_json
from kdcore.data.prepared import PreparedData, load_meta
from kdcore.data.sources import RawData, load_source
from kdcore.data.transforms import normalise
from kdcore.data.validate import validate_or_fail
from kdcore.errors import DataError
from kdcore.lifelong.scenarios import Increment

MIN_PER_CLASS = 2  # every class of an increment keeps at least one training and one test sample


def source_of(path: Path) -> str:
    """The data source a landed batch is read with: npz file, IDX directory or image folder."""
    if path.is_file() and path.suffix == ".npz":
        return "npz"
    if path.is_dir():
        if any("-images-idx" in p.name for p in path.iterdir()):
            return "idx"
        if any(p.is_dir() for p in path.iterdir()):
            return "imagefolder"
    raise DataError(f"{path}: not an increment (an .npz file, a directory of IDX files or an image folder)")


def increment_name(path: Path) -> str:
    """A landed batch's name: its file name without suffix, ASCII letters, digits, '_' and '-' kept
    (anything else becomes '_'), so it is a valid directory, DVC path and params entry."""
    stem = path.name.removesuffix(".npz")
    return "".join(ch if (ch.isascii() and ch.isalnum()) or ch in "_-" else "_" for ch in stem) or "_"


DIGESTS = "samples.safetensors"  # per-sample digests of an accepted increment: which samples it holds


def sample_digests(images: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """(N, 16) uint8: a BLAKE2b digest of each sample's values and label (the student's class index),
    whatever the file is called, how it is stored or in what order the samples come."""
    x = images.detach().cpu().contiguous().reshape(len(images), -1).numpy()
    y = labels.detach().cpu().numpy().astype(np.int64)
    rows = [hashlib.blake2b(x[i].tobytes() + y[i].tobytes(), digest_size=16).digest() for i in range(len(y))]
    return torch.frombuffer(bytearray(b"".join(rows)), dtype=torch.uint8).reshape(len(y), 16).clone()


def already_learned(digests: torch.Tensor, increments_dir: Path, accepted: list[str]) -> tuple[str, int] | None:
    """(the first accepted increment holding any of these samples, how many it holds), or None."""
    new = {bytes(row.tolist()) for row in digests}
    for earlier in accepted:
        known = Path(increments_dir) / earlier / DIGESTS
        if known.is_file():
            shared = len(new & {bytes(row.tolist()) for row in load_tensors(known)["digest"]})
            if shared:
                return earlier, shared
    return None


def read_batch(path: Path, image_size: int | None, channels: int) -> RawData:
    return load_source(source_of(path), path, image_size, channels)


def check_batch(raw: RawData, meta: PreparedData, where: str, report_dir: Path) -> torch.Tensor:
    """Great Expectations checks of a landed batch; returns its labels as the student's class indices."""
    if tuple(raw.images.shape[1:]) != meta.input_shape:
        got = "x".join(map(str, raw.images.shape[1:]))
        raise DataError(f"{where}: samples are {got}, the student takes {'x'.join(map(str, meta.input_shape))}")
    known = {name: i for i, name in enumerate(meta.meta["class_names"])}
    names = [raw.class_names[i] for i in raw.labels.tolist()]
    labels = torch.tensor([known.get(n, -1) for n in names], dtype=torch.long)
    flat = raw.images.flatten(1)
    table = pd.DataFrame(
        {
            "class_name": names,
            "label": labels.numpy(),
            "nan": torch.isnan(flat).sum(1).numpy(),
            "pixel_min": torch.nan_to_num(flat, nan=0.0).min(1).values.numpy(),
            "pixel_max": torch.nan_to_num(flat, nan=0.0).max(1).values.numpy(),
        }
    )
    checks = [
        ("ExpectColumnValuesToBeInSet", {"column": "class_name", "value_set": list(known)}),
        ("ExpectColumnValuesToBeBetween", {"column": "nan", "min_value": 0, "max_value": 0}),
    ]
    if raw.kind == "image":
        checks += [
            ("ExpectColumnValuesToBeBetween", {"column": "pixel_min", "min_value": 0.0, "max_value": 1.0}),
            ("ExpectColumnValuesToBeBetween", {"column": "pixel_max", "min_value": 0.0, "max_value": 1.0}),
        ]
    counts = table.groupby("class_name").size().rename("count").reset_index()
    balance = [("ExpectColumnValuesToBeBetween", {"column": "count", "min_value": MIN_PER_CLASS})]
    validate_or_fail(
        {"increment": (table, checks), "class_counts": (counts, balance)},
        suite=f"increment {where}",
        # under the work directory: checking a batch changes nothing versioned
        report_path=Path(report_dir) / f"increment-{Path(where).name}.html",
    )
    return labels


def split_test(labels: torch.Tensor, share: float, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Per class, a seeded `share` (at least one sample, never all) held out: (train index, test index)."""
    g = torch.Generator().manual_seed(seed)
    train, test = [], []
    for c in labels.unique().tolist():
        idx = (labels == c).nonzero().squeeze(1)
        idx = idx[torch.randperm(len(idx), generator=g)]
        n_test = min(len(idx) - 1, max(1, round(share * len(idx))))
        test.append(idx[:n_test])
        train.append(idx[n_test:])
    return torch.cat(train).sort().values, torch.cat(test).sort().values


@dataclass(frozen=True)
class Accepted:
    name: str
    directory: Path
    train: int
    test: int
    classes: list[str]


def accept(
    path: Path,
    *,
    prepared_dir: Path,
    increments_dir: Path,
    accepted: list[str],
    seed: int,
    test_share: float,
    report_dir: Path,
    image_size: int | None = None,
    channels: int = 1,
    name: str | None = None,
) -> Accepted:
    """Checks the batch at `path` and writes it as the increment `name` (default: from its file name)
    under `increments_dir`. `accepted` are the increments learned so far (lifelong.increments); the
    held-out test share is drawn with seed + len(accepted) + 1, so each increment gets its own draw."""
    path = Path(path)
    name = name or increment_name(path)
    if name in accepted:
        raise DataError(f"{path}: increment {name!r} is already in lifelong.increments")
    out = Path(increments_dir) / name
    if out.exists():
        raise DataError(f"{out}: exists already; remove it or land the batch under another name")
    meta = load_meta(prepared_dir)
    raw = read_batch(path, image_size, channels)
    labels = check_batch(raw, meta, str(path), report_dir)
    digests = sample_digests(raw.images, labels)
    learned = already_learned(digests, increments_dir, accepted)
    if learned:  # learned twice, a sample could land in the held-out share and inflate the gate's figures
        raise DataError(f"{path}: {learned[1]} of its {len(labels)} samples are in increment {learned[0]!r}, "
                        "already accepted; a sample is learned once (land only new samples)")  # fmt: skip
    x = normalise(raw.images, torch.tensor(meta.meta["mean"]), torch.tensor(meta.meta["std"]))
    seed = seed + len(accepted) + 1
    train, test = split_test(labels, test_share, seed)
    out.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{name}.", dir=out.parent))
    try:
        tensors = {}
        for split, idx in (("train", train), ("test", test)):
            tensors[split] = {"x": x[idx].contiguous(), "y": labels[idx].contiguous()}
            save_tensors(staging / f"{split}.safetensors", tensors[split])
        save_tensors(staging / DIGESTS, {"digest": digests})
        classes = sorted({meta.meta["class_names"][i] for i in labels.tolist()})
        write_json(
            staging / "meta.json",
            {
                "name": name,
                "landed_as": path.name,
                "source": source_of(path),
                "train": len(train),
                "test": len(test),
                "classes": classes,
                "seed": seed,
                "sha256": {split: sha256_tensors(t) for split, t in tensors.items()},
                "samples_sha256": hashlib.sha256(b"".join(sorted(bytes(r.tolist()) for r in digests))).hexdigest(),
            },
        )
        staging.rename(out)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    return Accepted(name, out, len(train), len(test), classes)


def load_increment(increments_dir: Path, name: str, task: int) -> Increment:
    """The accepted increment `name` as the `task`-th of a stream."""
    directory = Path(increments_dir) / name
    if not (directory / "meta.json").is_file():
        raise DataError(f"lifelong.increments: {name!r} has no {directory / 'meta.json'}; accept it first")
    train = load_tensors(directory / "train.safetensors")
    test = load_tensors(directory / "test.safetensors")
    classes = tuple(sorted(set(np.unique(train["y"].numpy()).tolist()) | set(test["y"].unique().tolist())))
    info = read_json(directory / "meta.json")
    return Increment(
        name, train["x"], train["y"], test["x"], test["y"], classes, task, {"landed_as": info["landed_as"]}
    )
