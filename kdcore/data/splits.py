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


def published_test_rows(header, published: bool, where: str) -> np.ndarray | None:
    """The source's own test rows when params ask for them (data.published_test); ConfigError when it has none."""
    if not published:
        return None
    if header.published_test is None:
        raise ConfigError(
            f"data.published_test: {where} has no published test set (IDX files named t10k-* or test-*); "
            "set it to false"
        )
    return header.published_test


def split_rows(
    labels: torch.Tensor, sizes: dict[str, int], seed: int, published_test: np.ndarray | None
) -> dict[str, np.ndarray]:
    """Sample indices per split: `stratified_split` of all rows, or, with `published_test` (the rows of the
    source's own test set), that set as the test split whole and the other splits drawn from the rest."""
    if published_test is None:
        return stratified_split(labels, sizes, seed)
    if sizes["test"] != len(published_test):
        raise ConfigError(
            f"data.splits.test: {sizes['test']}, but data.published_test takes the source's own test set, which "
            f"holds {len(published_test)} samples; set data.splits.test: {len(published_test)}"
        )
    rest = np.setdiff1d(np.arange(len(labels)), published_test)
    others = {name: size for name, size in sizes.items() if name != "test"}
    drawn = stratified_split(labels[torch.from_numpy(rest)], {**others, "test": 0}, seed)
    out = {name: rest[drawn[name]] for name in others}
    out["test"] = np.sort(published_test)
    return {name: out[name] for name in sizes}
