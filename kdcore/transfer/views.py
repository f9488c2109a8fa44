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

import numpy as np
import pandas as pd
import torch
import torch.nn.functional as F
from torch import nn
from tqdm import tqdm

from kdcore.artifacts import load_tensors, save_tensors
from kdcore.data.transforms import random_shifts, shift_images
from kdcore.inference import INPUT_BYTES, predict_logits, rows_per_pass


@dataclass(frozen=True)
class ViewMix:
    """Per view, a second image mixed into it: mixup (Zhang et al. 2018) blends the two, cutmix (Yun et
    al. 2019) pastes a box of the second; teacher and student see the same mixed input ("function
    matching", Beyer et al. 2022), so the teacher's output on it is the target."""

    partner: torch.Tensor  # (V,) index of the second image, -1: this view is not mixed
    lam: torch.Tensor  # (V,) weight of the first image in the blend (1: no blend)
    box: torch.Tensor  # (V, 4) cutmix box (y0, y1, x0, x1) taken from the second image; empty if y0 == y1

    def apply(self, x: torch.Tensor, partner_x: torch.Tensor, index: torch.Tensor) -> torch.Tensor:
        """x, partner_x: (B, C, H, W) views and their partners' (same shift); index: (B,) view numbers."""
        mixed = self.partner[index] >= 0
        if not bool(mixed.any()):
            return x
        lam = self.lam[index].view(-1, 1, 1, 1).to(x.dtype)
        out = lam * x + (1 - lam) * partner_x
        h, w = x.shape[-2:]
        y0, y1, x0, x1 = self.box[index].unbind(1)  # each (B,)
        rows = torch.arange(h).view(1, h)
        cols = torch.arange(w).view(1, w)
        in_rows = (rows >= y0.view(-1, 1)) & (rows < y1.view(-1, 1))  # (B, H)
        in_cols = (cols >= x0.view(-1, 1)) & (cols < x1.view(-1, 1))  # (B, W)
        box = (in_rows.unsqueeze(2) & in_cols.unsqueeze(1)).unsqueeze(1)  # (B, 1, H, W)
        out = torch.where(box, partner_x, out)
        return torch.where(mixed.view(-1, 1, 1, 1), out, x)

    def as_tensors(self) -> dict[str, torch.Tensor]:
        return {"partner": self.partner, "lam": self.lam, "box": self.box}


@dataclass(frozen=True)
class Views:
    src: torch.Tensor  # (V,) index into the transfer images
    dx: torch.Tensor  # (V,)
    dy: torch.Tensor  # (V,)
    mix: ViewMix | None = None

    def as_tensors(self) -> dict[str, torch.Tensor]:
        return {"src": self.src, "dx": self.dx, "dy": self.dy, **(self.mix.as_tensors() if self.mix else {})}

    @classmethod
    def from_tensors(cls, tensors: dict[str, torch.Tensor]) -> Views:
        mix = ViewMix(tensors["partner"], tensors["lam"], tensors["box"]) if "partner" in tensors else None
        return cls(tensors["src"], tensors["dx"], tensors["dy"], mix)

    def render(self, images: torch.Tensor, index: torch.Tensor | slice, fill: torch.Tensor) -> torch.Tensor:
        """(B, C, H, W): the views at `index`, shifted and, where the view says so, mixed."""
        if isinstance(index, slice):
            index = torch.arange(len(self.src))[index]
        dx, dy = self.dx[index], self.dy[index]
        x = shift_images(images[self.src[index]], dx, dy, fill)
        if self.mix is None:
            return x
        partner = self.mix.partner[index].clamp_min(0)
        return self.mix.apply(x, shift_images(images[partner], dx, dy, fill), index)


def mix_views(
    num_samples: int, src: torch.Tensor, first: torch.Tensor, image_hw: tuple[int, int], kind: str, share: float,
    alpha: float, seed: int,
) -> ViewMix:  # fmt: skip
    """Mixes a `share` of the views other than each sample's first with a random other sample:
    kind mixup, cutmix or both (each mixed view picks one at random); lam ~ Beta(alpha, alpha)."""
    rng = np.random.default_rng(seed + 7_777)  # its own stream: the shifts stay those of an unmixed set
    v = len(src)
    mixed = rng.random(v) < share
    mixed[first.numpy()] = False
    partner = torch.from_numpy(np.where(mixed, rng.integers(0, num_samples, v), -1)).long()
    lam = rng.beta(alpha, alpha, v)
    cut = mixed & ((kind == "cutmix") | ((kind == "both") & (rng.random(v) < 0.5)))
    h, w = image_hw
    side = np.sqrt(1 - lam)  # a box of area (1 - lam) H W
    bh, bw = np.round(h * side).astype(int), np.round(w * side).astype(int)
    cy, cx = rng.integers(0, h, v), rng.integers(0, w, v)
    y0, x0 = np.clip(cy - bh // 2, 0, h), np.clip(cx - bw // 2, 0, w)
    y1, x1 = np.clip(y0 + bh, 0, h), np.clip(x0 + bw, 0, w)
    box = np.where(cut[:, None], np.stack([y0, y1, x0, x1], 1), 0)
    lam = np.where(mixed & ~cut, lam, 1.0)
    return ViewMix(partner, torch.from_numpy(lam).float(), torch.from_numpy(box).long())


def make_views(
    num_samples: int,
    views_per_sample: int,
    max_shift: int,
    seed: int,
    mix: str = "none",
    mix_share: float = 0.0,
    mix_alpha: float = 1.0,
    image_hw: tuple[int, int] = (0, 0),
) -> Views:
    """`views_per_sample` views of each sample, sample-major; view 0 unshifted and unmixed. Same
    seed, same views."""
    generator = torch.Generator().manual_seed(seed)
    src = torch.arange(num_samples).repeat_interleave(views_per_sample)
    dx, dy = random_shifts(len(src), max_shift, generator)
    first = torch.arange(0, len(src), views_per_sample)
    dx[first], dy[first] = 0, 0
    if mix == "none" or mix_share == 0:
        return Views(src, dx, dy)
    return Views(src, dx, dy, mix_views(num_samples, src, first, image_hw, mix, mix_share, mix_alpha, seed))


def cache_key(teacher_sha256: str, data_sha256: str, views: Views) -> str:
    digest = hashlib.sha256(f"{teacher_sha256}:{data_sha256}".encode())
    for t in views.as_tensors().values():
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
    """(V, classes) logits of the teacher on every view, computed in chunks to bound memory (at most
    `chunk` views, and 8 x INPUT_BYTES of rendered views, at a time)."""
    out = []
    chunk = rows_per_pass(tuple(images.shape[1:]), chunk, 8 * INPUT_BYTES)
    for first in tqdm(range(0, len(views.src), chunk), desc="teacher views", unit="chunk", mininterval=1.0):
        out.append(predict_logits(teacher, views.render(images, slice(first, first + chunk), fill), device))
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
