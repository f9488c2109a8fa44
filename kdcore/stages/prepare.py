"""prepare: read the source, split it by seed, write each split as shards, check it, write a manifest.

Samples are read by index (kdcore.data.sources.open_source: image folders decoded one image at a
time, IDX files memory-mapped) a shard at a time (kdcore.data.shards), so memory does not grow with the
number of samples. Each sample is decoded once, by the process that writes its shard (data.workers
processes for image folders): the teacher split's per-channel statistics and every sample's checks are
gathered there, and only they come back. Shards hold the samples
as they come (uint8 pixels, or float32); the normalisation is applied when batches are read.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pandas as pd
import torch
from tqdm import tqdm

from kdcore.artifacts import atomic_dir, atomic_path, write_json
from kdcore.config import Params
from kdcore.data.readers import SourceReader, open_source
from kdcore.data.shards import SHARD, samples_per_shard, split_digest, write_shard
from kdcore.data.sources import DataHeader
from kdcore.data.splits import SPLITS, published_test_rows, split_rows
from kdcore.data.validate import Check, validate_or_fail
from kdcore.errors import DataError, KdflowError

PIXEL_STRIDE = 4  # uint8 samples' statistics are taken on every 4th value


def sample_stats(raw: torch.Tensor) -> dict[str, np.ndarray]:
    """Per-sample statistics of a chunk as stored, in [0, 1] units for uint8 pixels: what the checks
    look at. uint8 samples (which cannot be NaN or leave [0, 1]) are measured as integers on every
    PIXEL_STRIDE-th value, enough to tell a blank image from a real one at a fraction of the cost;
    float samples on every value."""
    if raw.dtype == torch.uint8:
        flat = raw.flatten(1).numpy()[:, ::PIXEL_STRIDE]
        n = flat.shape[1]
        total = flat.sum(1, dtype=np.int64).astype(np.float64)
        squares = np.square(flat, dtype=np.uint16).sum(1, dtype=np.int64).astype(np.float64)
        var = (squares - total * total / n) / max(n - 1, 1)
        return {
            "pixel_min": flat.min(1) / 255.0,
            "pixel_max": flat.max(1) / 255.0,
            "pixel_mean": total / n / 255.0,
            "pixel_std": np.sqrt(np.clip(var, 0, None)) / 255.0,
            "pixel_nan": np.zeros(len(flat), np.int64),  # bytes cannot be NaN
        }
    flat = raw.float().flatten(1)
    finite = torch.where(torch.isnan(flat), torch.zeros_like(flat), flat)
    return {
        "pixel_min": finite.min(1).values.numpy(),
        "pixel_max": finite.max(1).values.numpy(),
        "pixel_mean": finite.mean(1).numpy(),
        "pixel_std": finite.std(1).numpy() if flat.shape[1] > 1 else np.zeros(len(flat), np.float32),
        "pixel_nan": torch.isnan(flat).sum(1).numpy(),
    }


class ChannelStats:
    """Per-channel mean, std, min and max over everything added, in [0, 1] units for uint8 pixels:
    the teacher split's normalisation, one chunk at a time. uint8 pixels are counted per value
    (a 256-bin histogram per channel: exact); float32 samples are summed in float64."""

    def __init__(self, channels: int) -> None:
        self.hist = torch.zeros(channels, 256, dtype=torch.int64)
        self.n = 0
        self.sum = torch.zeros(channels, dtype=torch.float64)
        self.sumsq = torch.zeros(channels, dtype=torch.float64)
        self.low = torch.full((channels,), float("inf"), dtype=torch.float64)
        self.high = torch.full((channels,), float("-inf"), dtype=torch.float64)

    def add(self, raw: torch.Tensor) -> None:
        """`raw`: (N, H, W, C) as the shards hold it."""
        if raw.dtype == torch.uint8:
            for c in range(raw.shape[-1]):
                self.hist[c] += torch.bincount(raw[..., c].flatten(), minlength=256)
            return
        x = torch.nan_to_num(raw.double())
        self.n += x.shape[0] * x.shape[1] * x.shape[2]
        self.sum += x.sum(dim=(0, 1, 2))
        self.sumsq += (x * x).sum(dim=(0, 1, 2))
        self.low = torch.minimum(self.low, x.amin(dim=(0, 1, 2)))
        self.high = torch.maximum(self.high, x.amax(dim=(0, 1, 2)))

    def _moments(self) -> tuple[int, torch.Tensor, torch.Tensor]:
        if self.hist.sum():
            values = torch.arange(256, dtype=torch.float64) / 255.0
            counts = self.hist.double()
            n = int(self.hist[0].sum())
            return n, (counts * values).sum(1), (counts * values * values).sum(1)
        return self.n, self.sum, self.sumsq

    def mean_std(self) -> tuple[torch.Tensor, torch.Tensor]:
        n, total, squares = self._moments()
        mean = total / n
        var = (squares - n * mean * mean) / max(n - 1, 1)  # unbiased, as torch.std
        return mean.float(), var.clamp_min(0).sqrt().float().clamp_min(1e-6)

    def bounds(self) -> tuple[torch.Tensor, torch.Tensor]:
        return self.low.float(), self.high.float()

    def merge(self, other: ChannelStats) -> None:
        self.hist += other.hist
        self.n += other.n
        self.sum += other.sum
        self.sumsq += other.sumsq
        self.low = torch.minimum(self.low, other.low)
        self.high = torch.maximum(self.high, other.high)


ShardTask = tuple[str, int, np.ndarray, int | None]  # (split, shard number, source rows, channels to measure)


def shard_tasks(index: dict[str, np.ndarray], per_shard: int, channels: int) -> list[ShardTask]:
    """Every shard of every split, in order; the teacher split's shards measure the normalisation's
    statistics. An empty split gets one empty shard (DVC and git keep no empty directory)."""
    tasks = []
    for split in SPLITS:
        rows = index[split]
        measure = channels if split == "teacher_train" else None
        starts = range(0, len(rows), per_shard) if len(rows) else [0]
        tasks += [(split, k, rows[first : first + per_shard], measure) for k, first in enumerate(starts)]
    return tasks


def prepared_shard(reader: SourceReader, labels: torch.Tensor, staged: Path, task: ShardTask):
    """Decodes a shard's samples, writes the shard, and returns (split, number, its digest, its samples'
    checks, its channel statistics): all the main process needs, none of the samples."""
    split, number, rows, channels = task
    if len(rows):
        raw = reader.read(rows)
    else:
        c, h, w = reader.header.input_shape
        raw = torch.zeros((0, h, w, c), dtype=reader.dtype)
    partial = None
    if channels is not None and len(rows):
        partial = ChannelStats(channels)
        partial.add(raw)
    digest = write_shard(staged / split / SHARD.format(number), raw, labels[torch.from_numpy(rows)])
    checks = sample_stats(raw) if len(rows) else None
    return split, number, digest, checks, partial


def prepared_shards(
    reader: SourceReader, labels: torch.Tensor, staged: Path, tasks: list[ShardTask], workers: int
) -> Iterator:
    """prepared_shard of each task, in order: in `workers` processes when the reader decodes files (an image
    folder), so decoding, hashing and writing run on every core and only small results come back; once the
    workers run, the data checks' library is imported beside them (it takes seconds)."""
    if workers == 0 or not reader.decodes or len(tasks) < 2:
        for task in tasks:
            yield prepared_shard(reader, labels, staged, task)
        return
    import threading

    from torch.utils.data import DataLoader

    from kdcore.batches import worker_context

    loader = DataLoader(_Shards(reader, labels, staged, tasks), batch_size=None, num_workers=workers, prefetch_factor=2,
                        worker_init_fn=keep_freed_memory, multiprocessing_context=worker_context())  # fmt: skip
    items = iter(loader)  # the workers start here, before any thread of this process does
    threading.Thread(target=preload_checks, name="kdflow-import", daemon=True).start()
    for item in items:
        if isinstance(item, KdflowError):  # a worker's one-line error, raised here as it was raised there
            raise item
        yield item


def keep_freed_memory(_worker: int = 0) -> None:
    """Asks glibc to keep freed memory for reuse, in a decoding worker: every image and shard buffer is
    large enough to be mapped fresh by default, and the page faults and zeroing of ~3 buffers per image
    cost a third of decoding's time in the kernel. Elsewhere (not glibc) nothing changes."""
    import contextlib
    import ctypes

    with contextlib.suppress(OSError, AttributeError):
        libc = ctypes.CDLL("libc.so.6")
        libc.mallopt(-3, 1 << 28)  # M_MMAP_THRESHOLD: heap, not fresh mappings, below 256 MiB
        libc.mallopt(-1, 1 << 30)  # M_TRIM_THRESHOLD: keep up to 1 GiB of freed heap


def preload_checks() -> None:
    import contextlib

    with contextlib.suppress(Exception):  # the checks import it again and report any failure themselves
        import great_expectations  # noqa: F401


class _Shards(torch.utils.data.Dataset):
    def __init__(self, reader: SourceReader, labels: torch.Tensor, staged: Path, tasks: list[ShardTask]) -> None:
        self.reader, self.labels, self.staged, self.tasks = reader, labels, staged, tasks

    def __len__(self) -> int:
        return len(self.tasks)

    def __getitem__(self, i: int):
        try:
            return prepared_shard(self.reader, self.labels, self.staged, self.tasks[i])
        except KdflowError as err:  # returned, not raised: DataLoader would wrap it in a worker traceback
            return err


def manifest_checks(
    total: int, num_classes: int, sizes: dict[str, int], min_class_fraction: float, pixels: bool = True
) -> dict[str, list[Check]]:
    """The data checks; `pixels` adds the [0, 1] range checks of image data (vectors may hold any real value)."""
    per_class_floor = min_class_fraction * total / num_classes
    manifest: list[Check] = [
        ("ExpectTableRowCountToEqual", {"value": total}),
        ("ExpectColumnValuesToBeUnique", {"column": "sample_id"}),
        ("ExpectColumnValuesToBeInSet", {"column": "split", "value_set": list(sizes)}),
        ("ExpectColumnDistinctValuesToEqualSet", {"column": "label", "value_set": list(range(num_classes))}),
        ("ExpectColumnValuesToBeBetween", {"column": "pixel_nan", "min_value": 0, "max_value": 0}),
        # a blank image carries no signal; allow a few in real data
        ("ExpectColumnValuesToBeBetween", {"column": "pixel_std", "min_value": 1e-6, "mostly": 0.99}),
    ]
    if pixels:
        manifest += [
            ("ExpectColumnValuesToBeBetween", {"column": "pixel_min", "min_value": 0.0, "max_value": 1.0}),
            ("ExpectColumnValuesToBeBetween", {"column": "pixel_max", "min_value": 0.0, "max_value": 1.0}),
        ]
    manifest += [("ExpectColumnValuesToNotBeNull", {"column": c}) for c in ("sample_id", "split", "label")]
    balance: list[Check] = [
        ("ExpectColumnValuesToBeBetween", {"column": "count", "min_value": per_class_floor}),
        ("ExpectTableRowCountToEqual", {"value": num_classes}),
    ]
    split_counts: list[Check] = [("ExpectColumnValuesToBeBetween", {"column": "count", "min_value": 1})]
    return {"manifest": manifest, "class_balance": balance, "split_sizes": split_counts}


CHECKED_ROWS = 100_000  # the per-sample checks run on parts of the manifest of at most this many rows
WHOLE_TABLE = ("ExpectTableRowCountToEqual", "ExpectColumnValuesToBeUnique", "ExpectColumnDistinctValuesToEqualSet")


def manifest_tables(manifest: pd.DataFrame, checks: list[Check]) -> dict[str, tuple[pd.DataFrame, list[Check]]]:
    """The manifest's suites: whole when it is small; else the checks of the whole (row count, unique ids,
    every class) on its id and label columns, and the per-sample checks part by part (`manifest rows
    a-b`, CHECKED_ROWS each), so no suite holds more than a part of a large data set's rows."""
    if len(manifest) <= CHECKED_ROWS:
        return {"manifest": (manifest, checks)}
    whole = [c for c in checks if c[0] in WHOLE_TABLE]
    per_row = [c for c in checks if c[0] not in WHOLE_TABLE]
    tables = {"manifest": (manifest[["sample_id", "label"]], whole)}
    for first in range(0, len(manifest), CHECKED_ROWS):
        part = manifest.iloc[first : first + CHECKED_ROWS]
        tables[f"manifest rows {first}-{first + len(part) - 1}"] = (part, per_row)
    return tables


MIN_IMAGE_SIDE = 4  # smaller images leave nothing for pixel shifts, pooling or cutmix to work on


def check_learnable(header: DataHeader, ids: list[str], where: str, min_class_fraction: float) -> None:
    """Data no classifier can be trained and evaluated on stops here, with one line naming the problem:
    fewer than two classes, a class too rare for the splits (often a stray label such as 255), images
    too small to hold a pattern. Decided from the labels and the sample shape, before any decoding."""
    labels, names = header.labels, header.class_names
    counts = torch.bincount(labels, minlength=len(names))
    if len(names) < 2:
        name = names[0] if names else "none"
        raise DataError(f"{where}: only one class ({name!r}) in {len(ids)} samples; a classifier needs at least two")
    floor = min_class_fraction * len(ids) / len(names)
    rare = [i for i, c in enumerate(counts.tolist()) if c < max(floor, 1)]
    if rare:
        i = min(rare, key=lambda k: counts[k])
        rows = torch.nonzero(labels == i).flatten()[:3].tolist()
        listed = ", ".join(repr(names[k]) for k in rare[:5]) + (" ..." if len(rare) > 5 else "")
        raise DataError(
            f"{where}: class {names[i]!r} has {int(counts[i])} sample(s) (row(s) {rows}, id "
            f"{ids[rows[0]]}) but every class needs at least {floor:.0f} "
            f"(data.validation.min_class_fraction={min_class_fraction} of a balanced class); "
            f"rare classes: {listed}; a stray or out-of-range label?"
        )
    if header.kind == "image":
        h, w = header.input_shape[1:]
        if min(h, w) < MIN_IMAGE_SIDE:
            raise DataError(
                f"{where}: images are {h}x{w} pixels; kdflow needs at least {MIN_IMAGE_SIDE}x{MIN_IMAGE_SIDE} "
                "(imagefolder: set data.image_size to resize; (N, D) features: give x as 2-D vectors)"
            )


def run(params: Params) -> None:
    if params.data.is_graph:  # kdcore/graph/pipeline.py
        from kdcore.graph import pipeline

        cfg = params.data
        graph = pipeline.read_graph(cfg.source, cfg.path, cfg.name, cfg.graph, params.seed)
        about = {"source": cfg.source, "name": cfg.name, "setting": cfg.graph.setting, "split": cfg.graph.split}
        report = params.paths.reports / "validation" / "prepare.html"
        pipeline.write_prepared(graph, params.paths.prepared, report, about)
        return
    cfg = params.data
    out = params.paths.prepared
    where = f"data.path {cfg.path}" if cfg.path else f"data.source {cfg.source}"
    reader = open_source(cfg.source, cfg.path, cfg.image_size, cfg.channels)
    header = reader.header
    check_learnable(header, reader.ids, where, cfg.validation.min_class_fraction)
    params.check_for_kind(header.kind)
    sizes = cfg.splits.model_dump()
    index = split_rows(header.labels, sizes, params.seed, published_test_rows(header, cfg.published_test, where))
    num_classes, shape = len(header.class_names), header.input_shape
    tasks = shard_tasks(index, samples_per_shard(shape, reader.dtype), shape[0])

    # one pass, one decode per sample: each shard decoded, checked, measured and written by whoever decodes
    # it; the directory replaces the earlier one only whole
    with atomic_dir(out) as staged:
        stats, parts, digests = ChannelStats(shape[0]), [], {split: [] for split in SPLITS}
        for split in SPLITS:
            (staged / split).mkdir(parents=True, exist_ok=True)
        bar = tqdm(  # on a terminal only (disable=None): logs and captured output stay free of bars
            total=sum(len(index[s]) for s in SPLITS), desc="prepare", unit="sample", mininterval=1.0, disable=None
        )
        results = prepared_shards(reader, header.labels, staged, tasks, cfg.workers)
        for (split, _, rows, _), (_, _, digest, checks, partial) in zip(tasks, results, strict=True):
            digests[split].append(digest)
            if partial is not None:
                stats.merge(partial)
            if checks is not None:
                parts.append(pd.DataFrame({"row": rows, "split": split, **checks}))
            bar.update(len(rows))
        bar.close()
        hashes = {split: split_digest(digests[split]) for split in SPLITS}
        manifest = pd.concat(parts, ignore_index=True)
        labels = header.labels[torch.as_tensor(manifest["row"].to_numpy(dtype=np.int64, copy=True))]
        manifest.insert(0, "sample_id", [reader.ids[i] for i in manifest["row"].tolist()])
        manifest.insert(2, "label", labels.numpy())
        manifest.insert(3, "class_name", [header.class_names[i] for i in labels.tolist()])
        manifest = manifest.drop(columns="row")
        checks = manifest_checks(
            len(manifest), num_classes, sizes, cfg.validation.min_class_fraction, pixels=header.kind == "image"
        )
        counts = manifest.groupby("label").size().rename("count").reset_index()
        split_counts = manifest.groupby(["split", "label"]).size().rename("count").reset_index()
        validate_or_fail(
            {
                **manifest_tables(manifest, checks["manifest"]),
                "class_balance": (counts, checks["class_balance"]),
                "split_sizes": (split_counts, checks["split_sizes"]),
            },
            suite="prepare",
            report_path=params.paths.reports / "validation" / "prepare.html",
        )
        # statistics of the teacher's training split only, applied to every split when it is read
        mean, std = stats.mean_std()
        fill = (0.0 - mean) / std
        if header.kind == "vector":  # the valid range of a feature is what the teacher's split spans
            low, high = stats.bounds()
        else:  # pixels in [0, 1]
            low, high = torch.zeros_like(mean), torch.ones_like(mean)
        with atomic_path(staged / "manifest.csv") as tmp:
            manifest.to_csv(tmp, index=False, float_format="%.6g")
        c, h, w = shape
        write_json(
            staged / "meta.json",
            {
                "source": cfg.source,
                "input_shape": [c, h, w],
                "num_classes": num_classes,
                "class_names": header.class_names,
                "sizes": {s: len(index[s]) for s in SPLITS},
                "mean": mean.tolist(),
                "std": std.tolist(),
                "fill": fill.tolist(),
                "kind": header.kind,
                "stored": "uint8" if reader.dtype == torch.uint8 else "float32",
                "bounds": {"low": ((low - mean) / std).tolist(), "high": ((high - mean) / std).tolist()},
                "seed": params.seed,
                "sha256": hashes,
            },
        )
    print(
        f"prepare: {cfg.source} -> {', '.join(f'{s}={len(index[s])}' for s in SPLITS)} "
        f"({num_classes} classes, {c}x{h}x{w}, stored as {str(reader.dtype).removeprefix('torch.')}) in {out}"
    )
