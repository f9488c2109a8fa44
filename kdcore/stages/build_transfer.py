"""build_transfer: every teacher labels K views of each transfer sample once; the logits are cached.

Writes `views.safetensors` (which image, which shift, which hard label: independent of the teachers,
so the scratch student depends on it alone) and `teacher_logits.safetensors`: the soft labels the
student learns from (`logits`: one teacher's, or the ensemble's by transfer.ensemble.method) and
each teacher's own (`teacher/<name>`). Then checks the soft labels with Great Expectations.
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
from kdcore.transfer.ensemble import combine_logits
from kdcore.transfer.views import (
    Views,
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


def teacher_logits(
    params: Params, name: str, images: torch.Tensor, views: Views, data_sha: str, fill: torch.Tensor
) -> tuple[torch.Tensor, dict]:
    """One teacher's logits on every view, from the cache when this teacher, data and views were seen."""
    teacher_dir = params.paths.teachers / name
    teacher_sha = sha256_file(teacher_dir / WEIGHTS)
    key = cache_key(teacher_sha, data_sha, views)
    device = resolve_device(params.device)

    def compute() -> torch.Tensor:
        teacher, _ = load_model_dir(teacher_dir, device)
        return teacher_logits_on_views(teacher, images, views, fill, device)

    logits, was_cached = cached_teacher_logits(params.paths.work / "cache" / "teacher_logits", key, compute)
    return logits, {"cache_key": key, "teacher_sha256": teacher_sha, "cached": was_cached}


def view_accuracy(logits: torch.Tensor, labels: torch.Tensor) -> float | None:
    labeled = labels != UNLABELED
    if not labeled.any():
        return None
    return float((logits.argmax(1)[labeled] == labels[labeled]).float().mean())


def run(params: Params) -> None:
    cfg = params.transfer
    out = params.paths.transfer
    prepared = load_meta(params.paths.prepared)
    images, labels = transfer_images(params)
    views = make_views(len(images), cfg.views, cfg.shift, params.seed)
    view_labels = labels[views.src]
    data_sha = ":".join(prepared.meta["sha256"][s] for s in transfer_sources(params))

    members: dict[str, torch.Tensor] = {}
    teachers: dict[str, dict] = {}
    for name in params.teachers:
        members[name], teachers[name] = teacher_logits(params, name, images, views, data_sha, prepared.fill)
        teachers[name]["accuracy_on_views"] = view_accuracy(members[name], view_labels)
    ensemble = cfg.ensemble
    if len(members) == 1:
        logits = next(iter(members.values())).clone()
    else:
        stacked = torch.stack(list(members.values()))  # (teachers, views, classes)
        logits = combine_logits(stacked, ensemble.method, ensemble.weights, ensemble.tau)

    table = soft_label_table(logits)
    validate_or_fail(
        {"soft_labels": (table, soft_label_checks(prepared.num_classes, cfg.min_mean_confidence))},
        suite="build_transfer",
        report_path=params.paths.reports / "validation" / "build_transfer.html",
    )

    save_tensors(out / "views.safetensors", {**views.as_tensors(), "y": view_labels})
    save_tensors(
        out / "teacher_logits.safetensors",
        {"logits": logits, **{f"teacher/{name}": t for name, t in members.items()}},
        meta={"teachers": ",".join(members), "ensemble": ensemble.method if len(members) > 1 else "single"},
    )
    summary = {
        "views": len(views.src),
        "samples": len(images),
        "sources": transfer_sources(params),
        "labeled_views": int((view_labels != UNLABELED).sum()),
        "ensemble": ensemble.model_dump(mode="json") if len(members) > 1 else None,
        "teacher_accuracy_on_views": view_accuracy(logits, view_labels),
        "mean_confidence": float(table["confidence"].mean()),
        "mean_entropy": float(table["entropy"].mean()),
        "teachers": teachers,
    }
    write_json(out / "summary.json", summary)
    cached = sum(t["cached"] for t in teachers.values())
    combined = f"{ensemble.method} of {len(members)} teachers" if len(members) > 1 else f"teacher {next(iter(members))}"
    print(
        f"build_transfer: {len(images)} samples x {cfg.views} views = {len(views.src)} views, "
        f"soft labels from the {combined} ({cached} of {len(members)} from cache); "
        f"mean confidence {summary['mean_confidence']:.3f} -> {out}"
    )
