"""prepare: load the source, validate it, split it by seed, normalise, write tensors and a manifest."""

from __future__ import annotations

import pandas as pd
import torch

from kdcore.artifacts import atomic_dir, atomic_path, save_tensors, sha256_tensors, write_json
from kdcore.config import Params
from kdcore.data.sources import RawData, load_source
from kdcore.data.splits import SPLITS, stratified_split
from kdcore.data.transforms import normalise
from kdcore.data.validate import Check, validate_or_fail
from kdcore.errors import DataError


def build_manifest(data: RawData, split_of: list[str]) -> pd.DataFrame:
    """One row per kept sample: id, split, label, and the pixel statistics the checks look at."""
    flat = data.images.flatten(1)  # (N, C*H*W)
    finite = torch.where(torch.isnan(flat), torch.zeros_like(flat), flat)
    return pd.DataFrame(
        {
            "sample_id": data.ids,
            "split": split_of,
            "label": data.labels.numpy(),
            "class_name": [data.class_names[i] for i in data.labels.tolist()],
            "pixel_min": finite.min(1).values.numpy(),
            "pixel_max": finite.max(1).values.numpy(),
            "pixel_mean": finite.mean(1).numpy(),
            "pixel_std": finite.std(1).numpy(),
            "pixel_nan": torch.isnan(flat).sum(1).numpy(),
        }
    )


def manifest_checks(
    total: int, num_classes: int, sizes: dict[str, int], min_class_fraction: float, pixels: bool = True
) -> dict[str, list[Check]]:
    """The data checks; `pixels` adds the [0, 1] range checks of image data (vectors may hold any real value)."""
    per_class_floor = min_class_fraction * total / num_classes
    manifest: list[Check] = [
        ("ExpectTableRowCountToEqual", {"value": total}),
        ("ExpectColumnValuesToBeUnique", {"column": "sample_id"}),
        ("ExpectColumnValuesToBeInSet", {"column": "split", "value_set": list(sizes)}),
        ("ExpectColumnDistinctValuesToEqualSet", {"column": "label", "value_set": list(range(num_classes))}),
        ("ExpectColumnValuesToBeBetween", {"column": "pixel_nan", "min_value": 0, "max_value": 0}),
        # a blank image carries no signal; allow a few in real data
        ("ExpectColumnValuesToBeBetween", {"column": "pixel_std", "min_value": 1e-6, "mostly": 0.99}),
    ]
    if pixels:
        manifest += [
            ("ExpectColumnValuesToBeBetween", {"column": "pixel_min", "min_value": 0.0, "max_value": 1.0}),
            ("ExpectColumnValuesToBeBetween", {"column": "pixel_max", "min_value": 0.0, "max_value": 1.0}),
        ]
    manifest += [("ExpectColumnValuesToNotBeNull", {"column": c}) for c in ("sample_id", "split", "label")]
    balance: list[Check] = [
        ("ExpectColumnValuesToBeBetween", {"column": "count", "min_value": per_class_floor}),
        ("ExpectTableRowCountToEqual", {"value": num_classes}),
    ]
    split_counts: list[Check] = [("ExpectColumnValuesToBeBetween", {"column": "count", "min_value": 1})]
    return {"manifest": manifest, "class_balance": balance, "split_sizes": split_counts}


MIN_IMAGE_SIDE = 4  # smaller images leave nothing for pixel shifts, pooling or cutmix to work on


def check_learnable(data: RawData, where: str, min_class_fraction: float) -> None:
    """Data no classifier can be trained and evaluated on stops here, with one line naming the problem:
    fewer than two classes, a class too rare for the splits (often a stray label such as 255), images
    too small to hold a pattern."""
    counts = torch.bincount(data.labels, minlength=len(data.class_names))
    if len(data.class_names) < 2:
        name = data.class_names[0] if data.class_names else "none"
        raise DataError(
            f"{where}: only one class ({name!r}) in {len(data.ids)} samples; a classifier needs at least two"
        )
    floor = min_class_fraction * len(data.ids) / len(data.class_names)
    rare = [i for i, c in enumerate(counts.tolist()) if c < max(floor, 1)]
    if rare:
        i = min(rare, key=lambda k: counts[k])
        rows = torch.nonzero(data.labels == i).flatten()[:3].tolist()
        listed = ", ".join(repr(data.class_names[k]) for k in rare[:5]) + (" ..." if len(rare) > 5 else "")
        raise DataError(
            f"{where}: class {data.class_names[i]!r} has {int(counts[i])} sample(s) (row(s) {rows}, id "
            f"{data.ids[rows[0]]}) but every class needs at least {floor:.0f} "
            f"(data.validation.min_class_fraction={min_class_fraction} of a balanced class); "
            f"rare classes: {listed}; a stray or out-of-range label?"
        )
    if data.kind == "image":
        h, w = data.images.shape[2:]
        if min(h, w) < MIN_IMAGE_SIDE:
            raise DataError(
                f"{where}: images are {h}x{w} pixels; kdflow needs at least {MIN_IMAGE_SIDE}x{MIN_IMAGE_SIDE} "
                "(imagefolder: set data.image_size to resize; (N, D) features: give x as 2-D vectors)"
            )


def run(params: Params) -> None:
    cfg = params.data
    out = params.paths.prepared
    data = load_source(cfg.source, cfg.path, cfg.image_size, cfg.channels)
    check_learnable(
        data, f"data.path {cfg.path}" if cfg.path else f"data.source {cfg.source}", cfg.validation.min_class_fraction
    )
    sizes = cfg.splits.model_dump()
    index = stratified_split(data.labels, sizes, params.seed)

    keep = torch.cat([torch.from_numpy(index[s]) for s in SPLITS])
    split_of = [s for s in SPLITS for _ in range(len(index[s]))]
    kept = RawData(
        data.images[keep], data.labels[keep], [data.ids[i] for i in keep.tolist()], data.class_names, data.kind
    )
    manifest = build_manifest(kept, split_of)

    num_classes = len(data.class_names)
    params.check_for_kind(data.kind)
    checks = manifest_checks(
        len(kept.ids), num_classes, sizes, cfg.validation.min_class_fraction, pixels=data.kind == "image"
    )
    counts = manifest.groupby("label").size().rename("count").reset_index()
    split_counts = manifest.groupby(["split", "label"]).size().rename("count").reset_index()
    validate_or_fail(
        {
            "manifest": (manifest, checks["manifest"]),
            "class_balance": (counts, checks["class_balance"]),
            "split_sizes": (split_counts, checks["split_sizes"]),
        },
        suite="prepare",
        report_path=params.paths.reports / "validation" / "prepare.html",
    )

    # statistics of the teacher's training split only, applied to every split
    train_images = data.images[torch.from_numpy(index["teacher_train"])]
    mean = train_images.mean(dim=(0, 2, 3))  # (C,)
    std = train_images.std(dim=(0, 2, 3)).clamp_min(1e-6)  # (C,)
    fill = (0.0 - mean) / std
    if data.kind == "vector":  # the valid range of a feature is what the teacher's split spans
        low, high = train_images.amin(dim=(0, 2, 3)), train_images.amax(dim=(0, 2, 3))
    else:  # pixels in [0, 1]
        low, high = torch.zeros_like(mean), torch.ones_like(mean)

    # the whole directory at once: a failure leaves the earlier prepared data as it was (persisted in dvc.yaml)
    with atomic_dir(out) as staged:
        hashes = {}
        for split in SPLITS:
            idx = torch.from_numpy(index[split])
            tensors = {"x": normalise(data.images[idx], mean, std), "y": data.labels[idx]}
            save_tensors(staged / f"{split}.safetensors", tensors)
            hashes[split] = sha256_tensors(tensors)
        with atomic_path(staged / "manifest.csv") as tmp:
            manifest.to_csv(tmp, index=False, float_format="%.6g")
        c, h, w = data.images.shape[1:]
        write_json(
            staged / "meta.json",
            {
                "source": cfg.source,
                "input_shape": [c, h, w],
                "num_classes": num_classes,
                "class_names": data.class_names,
                "sizes": {s: len(index[s]) for s in SPLITS},
                "mean": mean.tolist(),
                "std": std.tolist(),
                "fill": fill.tolist(),
                "kind": data.kind,
                "bounds": {"low": ((low - mean) / std).tolist(), "high": ((high - mean) / std).tolist()},
                "seed": params.seed,
                "sha256": hashes,
            },
        )
    print(
        f"prepare: {cfg.source} -> {', '.join(f'{s}={len(index[s])}' for s in SPLITS)} "
        f"({num_classes} classes, {c}x{h}x{w}) in {out}"
    )
