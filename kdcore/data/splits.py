"""Deterministic stratified splits: the same seed always gives the same teacher/transfer/test samples."""

from __future__ import annotations

import numpy as np
import torch

from kdcore.errors import ConfigError

SPLITS = ("teacher_train", "transfer", "test", "validation")  # validation last: the others do not depend on it


def stratified_split(labels: torch.Tensor, sizes: dict[str, int], seed: int) -> dict[str, np.ndarray]:
    """Sample indices per split, each split with the class mix of the whole (largest remainder per class).

    Splits are disjoint; samples beyond the sum of sizes are left out. Indices come back sorted.
    """
    y = labels.numpy()
    n = len(y)
    total = sum(sizes.values())
    if total > n:
        raise ConfigError(f"data.splits: sizes sum to {total} but the data holds only {n} samples")
    rng = np.random.default_rng(seed)
    classes, counts = np.unique(y, return_counts=True)
    # shuffled pool of indices per class
    pools = {c: rng.permutation(np.flatnonzero(y == c)) for c in classes}
    taken = {c: 0 for c in classes}
    out: dict[str, np.ndarray] = {}
    for name, size in sizes.items():
        quota = counts / n * size
        per_class = np.floor(quota).astype(int)
        # hand the remaining samples to the classes with the largest fractional parts
        for i in np.argsort(-(quota - per_class), kind="stable")[: size - per_class.sum()]:
            per_class[i] += 1
        chosen = []
        for c, k in zip(classes, per_class, strict=True):
            k = min(k, len(pools[c]) - taken[c])
            chosen.append(pools[c][taken[c] : taken[c] + k])
            taken[c] += k
        idx = np.sort(np.concatenate(chosen))
        if len(idx) < size:  # a class ran dry: fill from the rest, still disjoint and seeded
            used = np.concatenate([*out.values(), idx]) if out else idx
            rest = rng.permutation(np.setdiff1d(np.arange(n), used))
            idx = np.sort(np.concatenate([idx, rest[: size - len(idx)]]))
        out[name] = idx
    return out
