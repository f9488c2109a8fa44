"""Stratified splits by seed and pixel shifts."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from kdcore.data.splits import stratified_split
from kdcore.data.transforms import random_shifts, shift_images
from kdcore.errors import ConfigError

SIZES = {"teacher_train": 40, "transfer": 30, "test": 20}


def test_split_is_disjoint_stratified_and_seeded() -> None:
    labels = torch.arange(100) % 4  # 25 per class
    a = stratified_split(labels, SIZES, seed=7)
    b = stratified_split(labels, SIZES, seed=7)
    c = stratified_split(labels, SIZES, seed=8)
    assert all(np.array_equal(a[k], b[k]) for k in SIZES)
    assert any(not np.array_equal(a[k], c[k]) for k in SIZES)
    assert {k: len(v) for k, v in a.items()} == SIZES
    assert len(np.unique(np.concatenate(list(a.values())))) == sum(SIZES.values())
    assert np.bincount(labels.numpy()[a["teacher_train"]]).tolist() == [10, 10, 10, 10]
    assert np.bincount(labels.numpy()[a["test"]]).tolist() == [5, 5, 5, 5]


def test_split_larger_than_data_names_the_key() -> None:
    with pytest.raises(ConfigError, match="data.splits: sizes sum to 90 but the data holds only 50"):
        stratified_split(torch.arange(50) % 5, SIZES, seed=0)


def test_shift_moves_content_and_fills_border() -> None:
    x = torch.arange(1, 10, dtype=torch.float32).view(1, 1, 3, 3)
    right = shift_images(x, torch.tensor([1]), torch.tensor([0]), torch.tensor([-5.0]))
    assert right[0, 0].tolist() == [[-5, 1, 2], [-5, 4, 5], [-5, 7, 8]]
    up = shift_images(x, torch.tensor([0]), torch.tensor([-1]), torch.tensor([0.0]))
    assert up[0, 0].tolist() == [[4, 5, 6], [7, 8, 9], [0, 0, 0]]
    same = shift_images(x, torch.tensor([0]), torch.tensor([0]), torch.tensor([0.0]))
    assert torch.equal(same, x)


def test_shift_per_sample_and_per_channel_fill() -> None:
    x = torch.ones(2, 2, 4, 4)
    out = shift_images(x, torch.tensor([2, -1]), torch.tensor([0, 1]), torch.tensor([-1.0, -2.0]))
    assert out[0, 0, :, :2].eq(-1).all() and out[0, 1, :, :2].eq(-2).all() and out[0, :, :, 2:].eq(1).all()
    assert out[1, 0, 0].eq(-1).all() and out[1, 0, :, -1].eq(-1).all() and out[1, 0, 1:, :-1].eq(1).all()


def test_random_shifts_are_bounded_and_seeded() -> None:
    dx, dy = random_shifts(1000, 2, torch.Generator().manual_seed(0))
    again = random_shifts(1000, 2, torch.Generator().manual_seed(0))
    assert torch.equal(dx, again[0]) and torch.equal(dy, again[1])
    assert dx.min() == -2 and dx.max() == 2 and dy.abs().max() == 2
