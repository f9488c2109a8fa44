"""Views of the transfer set and the teacher's cached outputs on them.

A view is (source sample, dx, dy). View 0 of every sample is the sample itself; views 1..K-1 are
random shifts of up to `shift` pixels, the jitter of Hinton et al. (2015). The teacher runs once
over all views; its logits are cached on disk under a key made of the teacher's and the data's
hashes, so no later step re-runs the teacher.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from pathlib import Path

import pandas as pd
import torch
import torch.nn.functional as F
from torch import nn
from tqdm import tqdm

from kdcore.artifacts import load_tensors, save_tensors
from kdcore.data.transforms import random_shifts, shift_images
from kdcore.inference import predict_logits


@dataclass(frozen=True)
class Views:
    src: torch.Tensor  # (V,) index into the transfer images
    dx: torch.Tensor  # (V,)
    dy: torch.Tensor  # (V,)

    def as_tensors(self) -> dict[str, torch.Tensor]:
        return {"src": self.src, "dx": self.dx, "dy": self.dy}


def make_views(num_samples: int, views_per_sample: int, max_shift: int, seed: int) -> Views:
    """`views_per_sample` views of each sample, sample-major; view 0 unshifted. Same seed, same views."""
    generator = torch.Generator().manual_seed(seed)
    src = torch.arange(num_samples).repeat_interleave(views_per_sample)
    dx, dy = random_shifts(len(src), max_shift, generator)
    first = torch.arange(0, len(src), views_per_sample)
    dx[first], dy[first] = 0, 0
    return Views(src, dx, dy)


def cache_key(teacher_sha256: str, data_sha256: str, views: Views) -> str:
    digest = hashlib.sha256(f"{teacher_sha256}:{data_sha256}".encode())
    for t in (views.src, views.dx, views.dy):
        digest.update(t.numpy().tobytes())
    return digest.hexdigest()[:32]


def teacher_logits_on_views(
    teacher: nn.Module,
    images: torch.Tensor,
    views: Views,
    fill: torch.Tensor,
    device: torch.device,
    chunk: int = 4096,
) -> torch.Tensor:
    """(V, classes) logits of the teacher on every view, computed in chunks to bound memory."""
    out = []
    for first in tqdm(range(0, len(views.src), chunk), desc="teacher views", unit="chunk", mininterval=1.0):
        sl = slice(first, first + chunk)
        x = shift_images(images[views.src[sl]], views.dx[sl], views.dy[sl], fill)
        out.append(predict_logits(teacher, x, device))
    return torch.cat(out)


def cached_teacher_logits(cache_dir: Path, key: str, compute) -> tuple[torch.Tensor, bool]:
    """The cached logits for `key`, or `compute()` stored under it. Returns (logits, was_cached)."""
    path = Path(cache_dir) / f"{key}.safetensors"
    if path.is_file():
        try:
            return load_tensors(path)["logits"], True
        except Exception:  # a damaged cache entry is recomputed, never trusted
            path.unlink(missing_ok=True)
    logits = compute()
    save_tensors(path, {"logits": logits})
    return logits, False


def soft_label_table(logits: torch.Tensor) -> pd.DataFrame:
    """One row per view: class probabilities p0..pK-1, their sum, the confidence and the entropy."""
    probs = F.softmax(logits.double(), dim=1)  # (V, classes)
    frame = pd.DataFrame(probs.numpy(), columns=[f"p{k}" for k in range(probs.shape[1])])
    frame["row_sum"] = probs.sum(1).numpy()
    frame["confidence"] = probs.max(1).values.numpy()
    frame["argmax"] = probs.argmax(1).numpy()
    frame["entropy"] = (-(probs * probs.clamp_min(1e-12).log()).sum(1)).numpy()
    return frame
