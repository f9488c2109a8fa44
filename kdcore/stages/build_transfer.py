"""build_transfer: the teacher labels K views of each transfer sample once; the logits are cached.

Writes `views.safetensors` (which image, which shift, which hard label: independent of the teacher,
so the scratch student depends on it alone) and `teacher_logits.safetensors`, then checks the soft
labels with Great Expectations.
"""

from __future__ import annotations

import torch

from kdcore.artifacts import save_tensors, sha256_file, write_json
from kdcore.checkpoint import WEIGHTS, load_model_dir
from kdcore.config import Params
from kdcore.data.prepared import load_meta
from kdcore.data.validate import Check, validate_or_fail
from kdcore.losses.hinton import UNLABELED
from kdcore.runtime import resolve_device
from kdcore.stages.transfer_set import transfer_images, transfer_sources
from kdcore.transfer.views import (
    cache_key,
    cached_teacher_logits,
    make_views,
    soft_label_table,
    teacher_logits_on_views,
)


def soft_label_checks(num_classes: int, min_mean_confidence: float) -> list[Check]:
    checks: list[Check] = []
    for k in range(num_classes):
        checks.append(("ExpectColumnValuesToNotBeNull", {"column": f"p{k}"}))
        checks.append(("ExpectColumnValuesToBeBetween", {"column": f"p{k}", "min_value": 0.0, "max_value": 1.0}))
    checks += [
        ("ExpectColumnValuesToBeBetween", {"column": "row_sum", "min_value": 1 - 1e-4, "max_value": 1 + 1e-4}),
        ("ExpectColumnDistinctValuesToEqualSet", {"column": "argmax", "value_set": list(range(num_classes))}),
        ("ExpectColumnMeanToBeBetween", {"column": "confidence", "min_value": min_mean_confidence, "max_value": 1.0}),
    ]
    return checks


def run(params: Params) -> None:
    cfg = params.transfer
    out = params.paths.transfer
    prepared = load_meta(params.paths.prepared)
    images, labels = transfer_images(params)
    views = make_views(len(images), cfg.views, cfg.shift, params.seed)
    view_labels = labels[views.src]

    teacher_sha = sha256_file(params.paths.teacher / WEIGHTS)
    data_sha = ":".join(prepared.meta["sha256"][s] for s in transfer_sources(params))
    key = cache_key(teacher_sha, data_sha, views)
    device = resolve_device(params.device)

    def compute() -> torch.Tensor:
        teacher, _ = load_model_dir(params.paths.teacher, device)
        return teacher_logits_on_views(teacher, images, views, prepared.fill, device)

    logits, was_cached = cached_teacher_logits(params.paths.work / "cache" / "teacher_logits", key, compute)

    table = soft_label_table(logits)
    validate_or_fail(
        {"soft_labels": (table, soft_label_checks(prepared.num_classes, cfg.min_mean_confidence))},
        suite="build_transfer",
        report_path=params.paths.reports / "validation" / "build_transfer.html",
    )

    save_tensors(out / "views.safetensors", {**views.as_tensors(), "y": view_labels})
    save_tensors(
        out / "teacher_logits.safetensors", {"logits": logits}, meta={"cache_key": key, "teacher_sha256": teacher_sha}
    )
    labeled = view_labels != UNLABELED
    agree = (torch.from_numpy(table["argmax"].to_numpy())[labeled] == view_labels[labeled]).float().mean()
    summary = {
        "views": len(views.src),
        "samples": len(images),
        "sources": transfer_sources(params),
        "labeled_views": int(labeled.sum()),
        "teacher_accuracy_on_views": float(agree) if labeled.any() else None,
        "mean_confidence": float(table["confidence"].mean()),
        "mean_entropy": float(table["entropy"].mean()),
        "cache_key": key,
        "teacher_sha256": teacher_sha,
        "cached": was_cached,
    }
    write_json(out / "summary.json", summary)
    print(
        f"build_transfer: {len(images)} samples x {cfg.views} views = {len(views.src)} views, "
        f"teacher logits {'from cache' if was_cached else 'computed'} ({key}); "
        f"mean confidence {summary['mean_confidence']:.3f} -> {out}"
    )
