"""Views for natural images: random resized crops and flips, drawn from the seed and stored with the views."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
import torch.nn.functional as F

from kdcore.artifacts import load_tensors
from kdcore.config import TransferConfig
from kdcore.errors import ConfigError
from kdcore.stages import get_stage
from kdcore.transfer.views import ViewCrop, Views, make_views
from tests.conftest import copy_run

CROP = ((0.35, 1.0), (0.75, 4 / 3), True)


def test_the_whole_box_is_the_image_and_a_flip_mirrors_it() -> None:
    images = torch.randn(2, 3, 9, 7)
    crop = ViewCrop(torch.tensor([[0.0, 0.0, 1.0, 1.0]] * 2), torch.tensor([False, True]))
    out = crop.apply(images, torch.arange(2))
    assert torch.allclose(out[0], images[0], atol=1e-6) and torch.allclose(out[1], images[1].flip(-1), atol=1e-6)


def test_a_crop_is_the_box_resized_to_the_image() -> None:
    images = torch.randn(1, 1, 8, 8)
    out = ViewCrop(torch.tensor([[0.25, 0.25, 0.5, 0.5]]), torch.tensor([False])).apply(images, torch.arange(1))
    resized = F.interpolate(images[:, :, 2:6, 2:6], size=(8, 8), mode="bilinear", align_corners=False)
    inner = slice(1, 7)  # at the border the crop reads the pixels just outside its box; a resize clamps
    assert torch.allclose(out[..., inner, inner], resized[..., inner, inner], atol=1e-5)


def test_crop_views_are_drawn_from_the_seed_within_their_ranges() -> None:
    views = make_views(50, 8, 2, seed=3, crop=CROP)
    again = make_views(50, 8, 2, seed=3, crop=CROP)
    other = make_views(50, 8, 2, seed=4, crop=CROP)
    assert all(torch.equal(a, b) for a, b in zip(views.as_tensors().values(), again.as_tensors().values(), strict=True))
    assert not torch.equal(views.crop.crop, other.crop.crop)
    first = torch.arange(0, 400, 8)
    assert torch.equal(views.crop.crop[first], torch.tensor([[0.0, 0.0, 1.0, 1.0]]).expand(50, 4))
    assert not views.crop.flip[first].any() and (views.dx == 0).all() and (views.dy == 0).all()
    top, left, height, width = views.crop.crop.unbind(1)
    assert ((top + height) <= 1 + 1e-6).all() and ((left + width) <= 1 + 1e-6).all()
    assert (height * width <= 1.0 + 1e-6).all() and (height * width >= 0.35 * 0.75 - 1e-6).all()
    assert 0.3 < views.crop.flip.float().mean() < 0.6
    stored = Views.from_tensors(views.as_tensors())
    assert torch.equal(stored.crop.crop, views.crop.crop) and torch.equal(stored.crop.flip, views.crop.flip)


def test_auto_crops_natural_images_and_shifts_small_grayscale_ones() -> None:
    auto = TransferConfig()
    assert auto.crop_for((3, 32, 32)) is not None and auto.crop_for((1, 96, 96)) is not None
    assert auto.crop_for((1, 28, 28)) is None and auto.crop_for((64,)) is None
    assert TransferConfig(augment="shift").crop_for((3, 224, 224)) is None
    assert TransferConfig(augment="crop").crop_for((1, 8, 8)) is not None
    with pytest.raises(ValueError, match="crop_scale"):
        TransferConfig(crop_scale=[0.5, 0.2])


def test_vectors_refuse_crops(tiny_run: Path, tmp_path: Path) -> None:
    params = copy_run(tiny_run, tmp_path, transfer__augment="crop", transfer__shift=0, teachers__cnn__train__shift=0)
    with pytest.raises(ConfigError, match=r"set transfer.augment \(crop\) to 0 / none / shift"):
        params.check_for_kind("vector")


def test_stages_train_on_crop_views(tiny_run: Path, tmp_path: Path) -> None:
    params = copy_run(tiny_run, tmp_path, transfer__augment="crop")
    get_stage("build_transfer")(params)
    views = load_tensors(tmp_path / "data/transfer/views.safetensors")
    assert {"crop", "flip"} <= set(views) and len(views["crop"]) == 800
    exact = load_tensors(tiny_run / "data/transfer/teacher_logits.safetensors")["logits"]
    logits = load_tensors(tmp_path / "data/transfer/teacher_logits.safetensors")["logits"]
    assert torch.allclose(logits[::2], exact[::2], atol=1e-5)  # view 0 of each sample: the image itself
    assert not torch.allclose(logits[1::2], exact[1::2], atol=1e-3)  # the others: crops, not shifts
    get_stage("train_student_scratch")(params)
    get_stage("distill")(params)
    assert (tmp_path / "models/student_kd/model.safetensors").is_file()
