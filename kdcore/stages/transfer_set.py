"""The transfer set as params define it: which prepared splits, and which of their labels may be used."""

from __future__ import annotations

import torch

from kdcore.config import Params
from kdcore.data.prepared import load_split
from kdcore.losses.hinton import UNLABELED


def transfer_sources(params: Params) -> list[str]:
    """The prepared splits the transfer set is made of, in the order their samples are indexed."""
    return ["transfer", "teacher_train"] if params.transfer.include_teacher_train else ["transfer"]


def transfer_images(params: Params) -> tuple[torch.Tensor, torch.Tensor]:
    """(N, C, H, W) images and (N,) labels of the transfer set; -1 where labels may not be used."""
    xs, ys = [], []
    for split in transfer_sources(params):
        part = load_split(params.paths.prepared, split)
        labeled = split == "teacher_train" or params.transfer.labeled
        xs.append(part.x)
        ys.append(part.y if labeled else torch.full_like(part.y, UNLABELED))
    return torch.cat(xs), torch.cat(ys)
