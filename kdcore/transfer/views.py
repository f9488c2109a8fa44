"""Views of the transfer set and the teacher's cached outputs on them.

A view is (source sample, dx, dy). View 0 of every sample is the sample itself; views 1..K-1 are
random shifts of up to `shift` pixels, the jitter of Hinton et al. (2015), or, for natural images
(`transfer.augment`), random resized crops and horizontal flips (the "inception crop" of Beyer et
al. 2022, "Knowledge distillation: a good teacher is patient and consistent", and of FKD), each
view's box and flip drawn from the seed and stored with the views. The teacher runs once
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
from kdcore.inference import predict_logits, render_budget, rows_per_pass


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
class ViewCrop:
    """Per view, a box of the image resized back to the image's size (bilinear, one sample at each output
    pixel's centre: the whole-image box gives the image back exactly), and a horizontal flip."""

    crop: torch.Tensor  # (V, 4) float32: top, left, height, width as fractions of the image
    flip: torch.Tensor  # (V,) bool

    def apply(self, x: torch.Tensor, index: torch.Tensor) -> torch.Tensor:
        """x: (B, C, H, W) source images of the views at `index` -> the views."""
        from torchvision.ops import roi_align

        h, w = x.shape[-2:]
        top, left, height, width = self.crop[index].double().unbind(1)
        boxes = torch.stack(
            [torch.arange(len(x), dtype=torch.float64), left * w, top * h, (left + width) * w, (top + height) * h], 1
        ).to(x.dtype)  # (B, 5): image, x1, y1, x2, y2 in pixels
        out = roi_align(x, boxes, output_size=(h, w), spatial_scale=1.0, sampling_ratio=1, aligned=True)
        return torch.where(self.flip[index].view(-1, 1, 1, 1), out.flip(-1), out)

    def as_tensors(self) -> dict[str, torch.Tensor]:
        return {"crop": self.crop, "flip": self.flip}


def crop_views(
    views: int, first: torch.Tensor, scale: tuple[float, float], ratio: tuple[float, float], flip: bool, seed: int
) -> ViewCrop:
    """Random resized crops (RandomResizedCrop's draw: an area share in `scale`, an aspect ratio in
    `ratio`, log-uniform; a box that does not fit is shrunk to fit) and flips with probability 1/2;
    the views at `first` (each sample's first) are the whole image, unflipped."""
    rng = np.random.default_rng(seed + 9_999)  # a stream of its own
    area = rng.uniform(scale[0], scale[1], views)
    aspect = np.exp(rng.uniform(np.log(ratio[0]), np.log(ratio[1]), views))  # width / height
    width = np.minimum(np.sqrt(area * aspect), 1.0)
    height = np.minimum(np.sqrt(area / aspect), 1.0)
    top = rng.uniform(0.0, 1.0, views) * (1.0 - height)
    left = rng.uniform(0.0, 1.0, views) * (1.0 - width)
    flips = rng.random(views) < 0.5 if flip else np.zeros(views, dtype=bool)
    crop = torch.from_numpy(np.stack([top, left, height, width], 1)).float()
    flips = torch.from_numpy(flips)
    crop[first] = torch.tensor([0.0, 0.0, 1.0, 1.0])
    flips[first] = False
    return ViewCrop(crop, flips)


@dataclass(frozen=True)
class Views:
    src: torch.Tensor  # (V,) index into the transfer images
    dx: torch.Tensor  # (V,)
    dy: torch.Tensor  # (V,)
    mix: ViewMix | None = None
    crop: ViewCrop | None = None  # crops and flips in place of shifts (dx, dy are 0)

    def as_tensors(self) -> dict[str, torch.Tensor]:
        return {
            "src": self.src, "dx": self.dx, "dy": self.dy,
            **(self.mix.as_tensors() if self.mix else {}), **(self.crop.as_tensors() if self.crop else {}),
        }  # fmt: skip

    @classmethod
    def from_tensors(cls, tensors: dict[str, torch.Tensor]) -> Views:
        mix = ViewMix(tensors["partner"], tensors["lam"], tensors["box"]) if "partner" in tensors else None
        crop = ViewCrop(tensors["crop"], tensors["flip"].bool()) if "crop" in tensors else None
        return cls(tensors["src"], tensors["dx"], tensors["dy"], mix, crop)

    def _geometry(self, x: torch.Tensor, index: torch.Tensor, fill: torch.Tensor) -> torch.Tensor:
        if self.crop is not None:
            return self.crop.apply(x, index)
        return shift_images(x, self.dx[index], self.dy[index], fill)

    def render(self, images: torch.Tensor, index: torch.Tensor | slice, fill: torch.Tensor) -> torch.Tensor:
        """(B, C, H, W): the views at `index`, shifted (or cropped and flipped) and, where the view says so,
        mixed with its partner, which is moved the same way."""
        if isinstance(index, slice):
            index = torch.arange(len(self.src))[index]
        x = self._geometry(images[self.src[index]], index, fill)
        if self.mix is None:
            return x
        mixed = (self.mix.partner[index] >= 0).nonzero().flatten()
        if len(mixed) == 0:
            return x
        sub = index[mixed]  # only the mixed views' partners are read, rendered and blended
        partner_x = self._geometry(images[self.mix.partner[sub]], sub, fill)
        x[mixed] = self.mix.apply(x[mixed], partner_x, sub)  # x is this call's own tensor
        return x


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
    crop: tuple[tuple[float, float], tuple[float, float], bool] | None = None,
) -> Views:
    """`views_per_sample` views of each sample, sample-major; view 0 unshifted and unmixed. `crop`:
    (scale, ratio, flip) of random resized crops in place of the shifts. Same seed, same views."""
    generator = torch.Generator().manual_seed(seed)
    src = torch.arange(num_samples).repeat_interleave(views_per_sample)
    dx, dy = random_shifts(len(src), max_shift if crop is None else 0, generator)
    first = torch.arange(0, len(src), views_per_sample)
    dx[first], dy[first] = 0, 0
    crops = crop_views(len(src), first, *crop, seed) if crop is not None else None
    mixed = None
    if mix != "none" and mix_share > 0:
        mixed = mix_views(num_samples, src, first, image_hw, mix, mix_share, mix_alpha, seed)
    return Views(src, dx, dy, mixed, crops)


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
    chunk = rows_per_pass(tuple(images.shape[1:]), chunk, render_budget())
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
