"""The transfer set as params define it: which images (real splits, synthetic pool), and which labels may be used."""

from __future__ import annotations

from dataclasses import dataclass

import torch

from kdcore.artifacts import load_tensors, sha256_tensors
from kdcore.config import Params
from kdcore.data.prepared import load_meta, load_split
from kdcore.errors import ConfigError
from kdcore.losses.hinton import UNLABELED


def transfer_sources(params: Params) -> list[str]:
    """The prepared splits of the real part of the transfer set, in the order their samples are indexed."""
    return ["transfer", "teacher_train"] if params.transfer.include_teacher_train else ["transfer"]


def transfer_images(params: Params) -> tuple[torch.Tensor, torch.Tensor]:
    """(N, C, H, W) real images and (N,) labels of the transfer set; -1 where labels may not be used."""
    xs, ys = [], []
    for split in transfer_sources(params):
        part = load_split(params.paths.prepared, split)
        labeled = split == "teacher_train" or params.transfer.labeled
        xs.append(part.x)
        ys.append(part.y if labeled else torch.full_like(part.y, UNLABELED))
    return torch.cat(xs), torch.cat(ys)


@dataclass(frozen=True)
class TransferPool:
    """The images the transfer views index: the real ones first, then the synthetic ones."""

    images: torch.Tensor  # (N, C, H, W) normalised
    labels: torch.Tensor  # (N,) -1 where there is no usable label (every synthetic image)
    real: int  # how many of the images are real
    data_sha: str  # identifies the images, for the teacher-output cache

    @property
    def synthetic(self) -> int:
        return len(self.images) - self.real


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
    unknown = [name for name in exclude if name not in class_names]
    if unknown:
        raise ConfigError(
            f"transfer.exclude_classes: unknown class {', '.join(map(repr, unknown))}; "
            f"classes: {', '.join(class_names)}"
        )
    return [class_names.index(name) for name in exclude]


def transfer_pool(params: Params) -> TransferPool:
    """The transfer images for `transfer.source`, after the class filters; a synthetic-only set never
    opens a real split. Real images are filtered by their label, synthetic ones by the teacher's prediction."""
    cfg = params.transfer
    meta = load_meta(params.paths.prepared).meta
    exclude = excluded_indices(meta["class_names"], cfg.exclude_classes)
    parts_x, parts_y, shas = [], [], []
    real = 0
    if cfg.source in ("real", "mixed"):
        x, y = transfer_images(params)
        if exclude or cfg.max_per_class:
            true = torch.cat([load_split(params.paths.prepared, s).y for s in transfer_sources(params)])
            keep = class_filter(true, exclude, cfg.max_per_class)
            x, y = x[keep], y[keep]
            shas.append(f"filter-{exclude}-{cfg.max_per_class}")
        parts_x.append(x)
        parts_y.append(y)
        shas += [meta["sha256"][s] for s in transfer_sources(params)]
        real = len(x)
    if cfg.source in ("synthetic", "mixed"):
        stored = load_tensors(params.paths.synthetic / "images.safetensors")
        pool = stored["x"]
        if exclude or cfg.max_per_class:
            pool = pool[class_filter(stored["predicted"], exclude, cfg.max_per_class)]
        if cfg.source == "mixed":
            pool = pool[: synthetic_count(len(pool), real, cfg.synthetic_share)]
        parts_x.append(pool)
        parts_y.append(torch.full((len(pool),), UNLABELED, dtype=torch.long))
        shas.append("synthetic-" + sha256_tensors({"x": pool}))
    return TransferPool(torch.cat(parts_x), torch.cat(parts_y), real, ":".join(shas))
