"""The transfer pool: the images the transfer views index, real ones first, then synthetic ones.

`build_transfer` assembles it once (`build_pool`: which real splits, which synthetic images, the
class filters) and writes it beside the views (`pool.safetensors`); every stage that learns from
the views or calibrates on transfer images reads that file (`load_pool`, `load_view_set`) and
never rebuilds it from the prepared splits.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from kdcore.artifacts import load_tensors, save_tensors, sha256_tensors
from kdcore.data.prepared import load_split
from kdcore.errors import ConfigError, DataError
from kdcore.losses.hinton import UNLABELED
from kdcore.training import ViewSet
from kdcore.transfer.views import Views

POOL_FILE = "pool.safetensors"
VIEWS_FILE = "views.safetensors"
LOGITS_FILE = "teacher_logits.safetensors"


@dataclass(frozen=True)
class TransferPool:
    """The images the transfer views index: the real ones first, then the synthetic ones."""

    images: torch.Tensor  # (N, C, H, W) normalised
    labels: torch.Tensor  # (N,) -1 where there is no usable label (every synthetic image)
    real: int  # how many of the images are real
    data_sha: str  # identifies the images, for the teacher-output cache
    settings: dict[str, Any] | None = None  # the transfer settings it was built with (params' transfer section)

    @property
    def synthetic(self) -> int:
        return len(self.images) - self.real


def real_sources(include_teacher_train: bool) -> list[str]:
    """The prepared splits of the real part of the transfer set, in the order their samples are indexed."""
    return ["transfer", "teacher_train"] if include_teacher_train else ["transfer"]


def real_transfer_images(
    prepared_dir: Path, include_teacher_train: bool, labeled: bool
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(N, C, H, W) real transfer images, (N,) labels that may be used (-1 where not) and (N,) true labels."""
    xs, ys, true = [], [], []
    for split in real_sources(include_teacher_train):
        part = load_split(prepared_dir, split)
        usable = split == "teacher_train" or labeled  # the teacher's split is labelled by definition
        xs.append(part.x)
        ys.append(part.y if usable else torch.full_like(part.y, UNLABELED))
        true.append(part.y)
    return torch.cat(xs), torch.cat(ys), torch.cat(true)


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
    parts_x, parts_y, shas = [], [], []
    real = 0
    if source in ("real", "mixed"):
        x, y, true = real_transfer_images(prepared_dir, include_teacher_train, labeled)
        if exclude or max_per_class:
            keep = class_filter(true, exclude, max_per_class)
            x, y = x[keep], y[keep]
            shas.append(f"filter-{exclude}-{max_per_class}")
        parts_x.append(x)
        parts_y.append(y)
        shas += [prepared_sha256[s] for s in real_sources(include_teacher_train)]
        real = len(x)
    if source in ("synthetic", "mixed"):
        stored = load_tensors(synthetic_file)
        pool = stored["x"]
        if exclude or max_per_class:
            pool = pool[class_filter(stored["predicted"], exclude, max_per_class)]
        if source == "mixed":
            pool = pool[: synthetic_count(len(pool), real, synthetic_share)]
        parts_x.append(pool)
        parts_y.append(torch.full((len(pool),), UNLABELED, dtype=torch.long))
        shas.append("synthetic-" + sha256_tensors({"x": pool}))
    return TransferPool(torch.cat(parts_x), torch.cat(parts_y), real, ":".join(shas))


def save_pool(path: Path, pool: TransferPool, settings: dict[str, Any]) -> None:
    """`pool.safetensors`: x (N, C, H, W), y (N,), synthetic (N,) bool; the count of real images, the
    cache key of the images and the transfer settings in its metadata."""
    synthetic = torch.arange(len(pool.images)) >= pool.real
    meta = {"real": str(pool.real), "data_sha": pool.data_sha, "settings": json.dumps(settings, sort_keys=True)}
    save_tensors(path, {"x": pool.images, "y": pool.labels, "synthetic": synthetic}, meta=meta)


def load_pool(path: Path) -> TransferPool:
    """The pool build_transfer wrote."""
    from safetensors import safe_open

    stored = load_tensors(path)
    with safe_open(str(path), framework="pt") as f:
        meta = f.metadata() or {}
    if "real" not in meta or "settings" not in meta:
        raise DataError(
            f"{path}: not a transfer pool (no metadata); rerun build_transfer (dvc repro -f build_transfer)"
        )
    return TransferPool(stored["x"], stored["y"], int(meta["real"]), meta["data_sha"], json.loads(meta["settings"]))


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


def load_view_set(transfer_dir: Path, fill: torch.Tensor) -> tuple[ViewSet, TransferPool]:
    """The transfer views from build_transfer (real and/or synthetic images), with the (ensemble)
    teacher's logits on them, and the pool they index."""
    pool = load_pool(Path(transfer_dir) / POOL_FILE)
    stored = load_tensors(Path(transfer_dir) / VIEWS_FILE)
    views = Views.from_tensors(stored)
    logits = load_tensors(Path(transfer_dir) / LOGITS_FILE)["logits"]
    view_set = ViewSet(pool.images, views.src, views.dx, views.dy, stored["y"], fill, logits, mix=views.mix)
    return view_set, pool
