"""The transfer pool: the images the transfer views index, real ones first, then synthetic ones.

`build_transfer` assembles it once (`build_pool`: which real splits, which synthetic images, the
class filters) and writes it beside the views (`pool.safetensors`); every stage that learns from
the views or calibrates on transfer images reads that file (`load_pool`, `load_view_set`) and
never rebuilds it. The file holds where each image is (a part: the prepared transfer or teacher
split, or the synthetic images; and the row there), its usable label and whether it is synthetic,
not the pixels: the images are read from their part when a batch needs them, so a pool of natural
images costs no copy of the data set.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from kdcore.artifacts import load_tensors, save_tensors, sha256_tensors
from kdcore.data.prepared import Images, fits_in_memory, load_meta, load_split
from kdcore.errors import ConfigError, DataError
from kdcore.losses.hinton import UNLABELED
from kdcore.training import ViewSet
from kdcore.transfer.views import Views

POOL_FILE = "pool.safetensors"
VIEWS_FILE = "views.safetensors"
LOGITS_FILE = "teacher_logits.safetensors"
SYNTHETIC_FILE = "images.safetensors"  # under paths.synthetic: the synthesize stage's images


PARTS = ("transfer", "teacher_train", "synthetic")  # where a pool image comes from (pool.safetensors `part`)


@dataclass(frozen=True)
class TransferPool:
    """The images the transfer views index: the real ones first, then the synthetic ones."""

    images: Images  # (N, C, H, W) normalised: in memory, or read from their parts on demand
    labels: torch.Tensor  # (N,) -1 where there is no usable label (every synthetic image)
    real: int  # how many of the images are real
    data_sha: str  # identifies the images, for the teacher-output cache
    settings: dict[str, Any] | None = None  # the transfer settings it was built with (params' transfer section)
    part: torch.Tensor | None = None  # (N,) uint8: index into PARTS
    row: torch.Tensor | None = None  # (N,) the image's row in its part

    @property
    def synthetic(self) -> int:
        return len(self.images) - self.real


class PoolImages:
    """Images gathered from several parts by (part, row), read on demand and indexed like a tensor."""

    def __init__(self, parts: dict[int, Images], part: torch.Tensor, row: torch.Tensor, shape: tuple[int, ...]):
        self.parts, self.part, self.row = parts, part.long(), row.long()
        self.shape = torch.Size((len(part), *shape))

    def __len__(self) -> int:
        return len(self.part)

    def subset(self, index: torch.Tensor) -> PoolImages:
        """The images at `index` (a long or bool tensor), still read on demand."""
        return PoolImages(self.parts, self.part[index], self.row[index], tuple(self.shape[1:]))

    def __getitem__(self, index) -> torch.Tensor:
        if isinstance(index, int):
            return self[torch.tensor([index])][0]
        if isinstance(index, torch.Tensor) and index.dtype == torch.bool:
            index = index.nonzero().flatten()
        index = torch.arange(len(self))[index] if isinstance(index, slice) else torch.as_tensor(index).long()
        out = torch.empty((len(index), *self.shape[1:]))
        part, row = self.part[index], self.row[index]
        for k in part.unique().tolist():
            where = (part == k).nonzero().flatten()
            out[where] = self.parts[k][row[where]]
        return out


def gather(parts: dict[int, Images], part: torch.Tensor, row: torch.Tensor, shape: tuple[int, ...]) -> Images:
    """The pool's images: one tensor when every part is in memory (the bundled data), else PoolImages."""
    if all(isinstance(images, torch.Tensor) for images in parts.values()):
        if not len(part):
            return torch.zeros((0, *shape))
        return PoolImages(parts, part, row, shape)[torch.arange(len(part))]
    return PoolImages(parts, part, row, shape)


def real_sources(include_teacher_train: bool) -> list[str]:
    """The prepared splits of the real part of the transfer set, in the order their samples are indexed."""
    return ["transfer", "teacher_train"] if include_teacher_train else ["transfer"]


def real_transfer_images(
    prepared_dir: Path, include_teacher_train: bool, labeled: bool
) -> tuple[Images, torch.Tensor, torch.Tensor]:
    """(N, C, H, W) real transfer images (read on demand when large), (N,) labels that may be used (-1
    where not) and (N,) true labels."""
    parts, ys, true, part_ids, rows = {}, [], [], [], []
    for split in real_sources(include_teacher_train):
        loaded = load_split(prepared_dir, split)
        usable = split == "teacher_train" or labeled  # the teacher's split is labelled by definition
        parts[PARTS.index(split)] = loaded.x
        ys.append(loaded.y if usable else torch.full_like(loaded.y, UNLABELED))
        true.append(loaded.y)
        part_ids.append(torch.full((len(loaded.y),), PARTS.index(split), dtype=torch.uint8))
        rows.append(torch.arange(len(loaded.y)))
    shape = tuple(load_meta(prepared_dir).input_shape)
    images = gather(parts, torch.cat(part_ids), torch.cat(rows), shape)
    return images, torch.cat(ys), torch.cat(true)


def synthetic_count(available: int, real: int, share: float) -> int:
    """How many synthetic images make up `share` of a set that has `real` real ones (at most `available`)."""
    return min(available, round(real * share / (1 - share)))


def class_filter(classes: torch.Tensor, exclude: list[int], max_per_class: int | None) -> torch.Tensor:
    """(N,) bool: keep samples whose class is not excluded, at most `max_per_class` of each (the first ones)."""
    keep = ~torch.isin(classes, torch.tensor(exclude, dtype=torch.long))
    if max_per_class is not None:
        for k in classes.unique():
            members = (classes == k).nonzero().flatten()
            keep[members[max_per_class:]] = False
    return keep


def excluded_indices(class_names: list[str], exclude: list[str]) -> list[int]:
    """The class indices of `exclude` (names); ConfigError naming transfer.exclude_classes for an unknown
    class, or for a list that leaves no class to transfer."""
    unknown = [name for name in exclude if name not in class_names]
    if unknown:
        raise ConfigError(
            f"transfer.exclude_classes: unknown class {', '.join(map(repr, unknown))}; "
            f"classes: {', '.join(class_names)}"
        )
    if set(exclude) >= set(class_names):
        raise ConfigError(
            f"transfer.exclude_classes leaves no class in the transfer set (it names all {len(class_names)}); "
            "leave out fewer"
        )
    return [class_names.index(name) for name in exclude]


def synthetic_images(path: Path) -> tuple[Images, torch.Tensor]:
    """The synthesize stage's images (read on demand when large) and the teacher's class for each."""
    from kdcore.data.shards import FileRows

    rows = FileRows(path, "x")
    predicted = rows.tensor("predicted")
    images = rows[:] if fits_in_memory(rows.nbytes) else rows
    return images, predicted


def build_pool(
    prepared_dir: Path,
    prepared_sha256: dict[str, str],
    synthetic_file: Path,
    *,
    source: str,
    exclude: list[int],
    max_per_class: int | None,
    synthetic_share: float,
    include_teacher_train: bool,
    labeled: bool,
) -> TransferPool:
    """The transfer images for `source` (real | synthetic | mixed), after the class filters; a synthetic-only
    set never opens a real split. Real images are filtered by their label, synthetic ones by the teacher's
    prediction."""
    parts: dict[int, Images] = {}
    part_ids, rows, labels, shas = [], [], [], []
    real = 0
    shape = tuple(load_meta(prepared_dir).input_shape)
    if source in ("real", "mixed"):
        for split in real_sources(include_teacher_train):
            loaded = load_split(prepared_dir, split)
            usable = split == "teacher_train" or labeled  # the teacher's split is labelled by definition
            keep = torch.arange(len(loaded.y))
            if exclude or max_per_class:
                keep = keep[class_filter(loaded.y, exclude, max_per_class)]
            parts[PARTS.index(split)] = loaded.x
            part_ids.append(torch.full((len(keep),), PARTS.index(split), dtype=torch.uint8))
            rows.append(keep)
            labels.append(loaded.y[keep] if usable else torch.full((len(keep),), UNLABELED, dtype=torch.long))
            real += len(keep)
        if exclude or max_per_class:
            shas.append(f"filter-{exclude}-{max_per_class}")
        shas += [prepared_sha256[s] for s in real_sources(include_teacher_train)]
    if source in ("synthetic", "mixed"):
        images, predicted = synthetic_images(synthetic_file)
        keep = torch.arange(len(predicted))
        if exclude or max_per_class:
            keep = keep[class_filter(predicted, exclude, max_per_class)]
        if source == "mixed":
            keep = keep[: synthetic_count(len(keep), real, synthetic_share)]
        parts[PARTS.index("synthetic")] = images
        part_ids.append(torch.full((len(keep),), PARTS.index("synthetic"), dtype=torch.uint8))
        rows.append(keep)
        labels.append(torch.full((len(keep),), UNLABELED, dtype=torch.long))
        shas.append("synthetic-" + sha256_tensors({"x": images[keep] if len(keep) else torch.zeros(0)}))
    part, row = torch.cat(part_ids), torch.cat(rows)
    return TransferPool(gather(parts, part, row, shape), torch.cat(labels), real, ":".join(shas), part=part, row=row)


def save_pool(path: Path, pool: TransferPool, settings: dict[str, Any]) -> None:
    """`pool.safetensors`: part (N,) uint8 and row (N,), where each image is; y (N,); synthetic (N,)
    bool; the count of real images, the cache key of the images and the transfer settings in its
    metadata."""
    synthetic = torch.arange(len(pool.labels)) >= pool.real
    meta = {"real": str(pool.real), "data_sha": pool.data_sha, "settings": json.dumps(settings, sort_keys=True)}
    tensors = {"part": pool.part, "row": pool.row, "y": pool.labels, "synthetic": synthetic}
    save_tensors(path, tensors, meta=meta)


def load_pool(path: Path, prepared_dir: Path, synthetic_file: Path) -> TransferPool:
    """The pool build_transfer wrote, its images read from the prepared splits and the synthetic images."""
    from safetensors import safe_open

    stored = load_tensors(path)
    with safe_open(str(path), framework="pt") as f:
        meta = f.metadata() or {}
    if "real" not in meta or "settings" not in meta or "part" not in stored:
        raise DataError(
            f"{path}: not a transfer pool of this version (no part or metadata); rerun build_transfer "
            "(dvc repro -f build_transfer)"
        )
    part, row = stored["part"], stored["row"]
    parts: dict[int, Images] = {}
    for k in part.unique().tolist():
        if PARTS[k] == "synthetic":
            parts[k] = synthetic_images(synthetic_file)[0]
        else:
            parts[k] = load_split(prepared_dir, PARTS[k]).x
    shape = tuple(load_meta(prepared_dir).input_shape)
    images = gather(parts, part, row, shape)
    return TransferPool(
        images, stored["y"], int(meta["real"]), meta["data_sha"], json.loads(meta["settings"]), part=part, row=row
    )


def calibration_images(pool: TransferPool, wanted: int, key: str) -> torch.Tensor:
    """The first `wanted` pool images; a line on stderr when the pool holds fewer (`key` names the setting)."""
    if len(pool.images) < wanted:
        import sys

        print(
            f"warning: {key}={wanted} but the transfer set holds {len(pool.images)} images: "
            f"int8 ranges are calibrated on those {len(pool.images)}",
            file=sys.stderr,
        )
    return pool.images[:wanted]


def load_view_set(
    transfer_dir: Path, prepared_dir: Path, synthetic_file: Path, topk_rest: str = "spread"
) -> tuple[ViewSet, TransferPool]:
    """The transfer views from build_transfer (real and/or synthetic images), with the (ensemble)
    teacher's logits on them, and the pool they index. A top-K cache (transfer.cache_topk) is read as
    SoftLabels: rows of rebuilt log-probabilities, with the other classes' mass as `topk_rest` says."""
    fill = load_meta(prepared_dir).fill
    pool = load_pool(Path(transfer_dir) / POOL_FILE, prepared_dir, synthetic_file)
    stored = load_tensors(Path(transfer_dir) / VIEWS_FILE)
    views = Views.from_tensors(stored)
    if pool.settings.get("cache_topk") is not None:
        from kdcore.transfer.soft_labels import SOFT_LABELS_DIR, SoftLabels

        logits = SoftLabels(Path(transfer_dir) / SOFT_LABELS_DIR, topk_rest)
        if len(logits) != len(views.src):
            raise DataError(
                f"{transfer_dir}: {len(logits)} soft labels for {len(views.src)} views; rerun build_transfer"
            )
    else:
        logits = load_tensors(Path(transfer_dir) / LOGITS_FILE)["logits"]
    view_set = ViewSet(
        pool.images, views.src, views.dx, views.dy, stored["y"], fill, logits, mix=views.mix, crop=views.crop
    )
    return view_set, pool
