"""The transfer set as params define it: which images (real splits, synthetic pool), and which labels may be used."""

from __future__ import annotations

from dataclasses import dataclass

import torch

from kdcore.artifacts import load_tensors, sha256_tensors
from kdcore.config import Params
from kdcore.data.prepared import load_meta, load_split
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


def transfer_pool(params: Params) -> TransferPool:
    """The transfer images for `transfer.source`; a synthetic-only set never opens a real split."""
    cfg = params.transfer
    parts_x, parts_y, shas = [], [], []
    real = 0
    if cfg.source in ("real", "mixed"):
        x, y = transfer_images(params)
        meta = load_meta(params.paths.prepared).meta
        parts_x.append(x)
        parts_y.append(y)
        shas += [meta["sha256"][s] for s in transfer_sources(params)]
        real = len(x)
    if cfg.source in ("synthetic", "mixed"):
        pool = load_tensors(params.paths.synthetic / "images.safetensors")["x"]
        if cfg.source == "mixed":
            pool = pool[: synthetic_count(len(pool), real, cfg.synthetic_share)]
        parts_x.append(pool)
        parts_y.append(torch.full((len(pool),), UNLABELED, dtype=torch.long))
        shas.append("synthetic-" + sha256_tensors({"x": pool}))
    return TransferPool(torch.cat(parts_x), torch.cat(parts_y), real, ":".join(shas))
