"""build_transfer: every teacher labels K views of each transfer sample once; the logits are cached.

Writes, under paths.transfer, the one copy of the transfer set every later stage reads:
`pool.safetensors` (the images the views index, real first then synthetic, their usable labels,
which are synthetic, and the transfer settings it was built with), `views.safetensors` (which
image, which shift and mix, which hard label) and `teacher_logits.safetensors`: the soft labels
the student learns from (`logits`: one teacher's, or the ensemble's by transfer.ensemble.method)
and each teacher's own (`teacher/<name>`). The soft labels are checked with Great Expectations
before anything is written.
"""

from __future__ import annotations

import shutil
from dataclasses import dataclass
from pathlib import Path

import pandas as pd
import torch
import torch.nn.functional as F
from tqdm import tqdm

from kdcore.artifacts import save_tensors, sha256_file, write_json
from kdcore.checkpoint import load_model_dir, weights_file
from kdcore.config import Params
from kdcore.data.prepared import load_meta
from kdcore.data.validate import Check, validate_or_fail
from kdcore.errors import DataError
from kdcore.inference import predict_logits, render_budget, rows_per_pass
from kdcore.losses.hinton import UNLABELED
from kdcore.runtime import resolve_device
from kdcore.transfer.ensemble import combine_logits
from kdcore.transfer.pool import (
    LOGITS_FILE,
    POOL_FILE,
    SYNTHETIC_FILE,
    VIEWS_FILE,
    build_pool,
    excluded_indices,
    save_pool,
)
from kdcore.transfer.soft_labels import SOFT_LABELS_DIR, SoftLabelWriter, rebuild, top_k
from kdcore.transfer.views import (
    Views,
    cache_key,
    cached_teacher_logits,
    make_views,
    soft_label_table,
    teacher_logits_on_views,
)

CHECK_ROWS = 100_000  # top-k soft labels: Great Expectations checks at most this many views, evenly spaced


def soft_label_checks(num_classes: int, min_mean_confidence: float, every_class: bool = True) -> list[Check]:
    """Probabilities in [0, 1] summing to 1, the mean confidence floor, and (for real data) every class
    among the teacher's predictions; a synthetic pool's class shares are checked by `synthesize`
    against synth.checks.min_class_share instead."""
    checks: list[Check] = []
    for k in range(num_classes):
        checks.append(("ExpectColumnValuesToNotBeNull", {"column": f"p{k}"}))
        checks.append(("ExpectColumnValuesToBeBetween", {"column": f"p{k}", "min_value": 0.0, "max_value": 1.0}))
    checks += [
        ("ExpectColumnValuesToBeBetween", {"column": "row_sum", "min_value": 1 - 1e-4, "max_value": 1 + 1e-4}),
        ("ExpectColumnMeanToBeBetween", {"column": "confidence", "min_value": min_mean_confidence, "max_value": 1.0}),
    ]
    if every_class:
        checks.append(
            ("ExpectColumnDistinctValuesToEqualSet", {"column": "argmax", "value_set": list(range(num_classes))})
        )
    return checks


def teacher_logits(
    params: Params, name: str, images: torch.Tensor, views: Views, data_sha: str, fill: torch.Tensor
) -> tuple[torch.Tensor, dict, bool]:
    """One teacher's logits on every view, from the cache when this teacher, data and views were seen;
    whether they came from the cache is returned, not stored, so the stage's outputs do not depend on it."""
    teacher_dir = params.paths.teachers / name
    teacher_sha = sha256_file(weights_file(teacher_dir))
    key = cache_key(teacher_sha, data_sha, views)
    device = resolve_device(params.device)

    def compute() -> torch.Tensor:
        teacher, _ = load_model_dir(teacher_dir, device)
        return teacher_logits_on_views(teacher, images, views, fill, device)

    logits, was_cached = cached_teacher_logits(params.paths.work / "cache" / "teacher_logits", key, compute)
    return logits, {"cache_key": key, "teacher_sha256": teacher_sha}, was_cached


def view_accuracy(logits: torch.Tensor, labels: torch.Tensor) -> float | None:
    labeled = labels != UNLABELED
    if not labeled.any():
        return None
    return float((logits.argmax(1)[labeled] == labels[labeled]).float().mean())


def exact_soft_labels(
    params: Params, images, views: Views, view_labels: torch.Tensor, data_sha: str, fill: torch.Tensor
) -> tuple[torch.Tensor, dict[str, torch.Tensor], dict[str, dict], int]:
    """Every teacher's float32 logits on every view (from the work cache when seen), and the soft labels
    they combine into; holds (teachers + 1) x views x classes floats."""
    members: dict[str, torch.Tensor] = {}
    teachers: dict[str, dict] = {}
    cached = 0
    for name in params.teachers:
        members[name], teachers[name], was_cached = teacher_logits(params, name, images, views, data_sha, fill)
        cached += was_cached
        teachers[name]["accuracy_on_views"] = view_accuracy(members[name], view_labels)
    if len(members) == 1:
        return next(iter(members.values())).clone(), members, teachers, cached
    ensemble = params.transfer.ensemble
    stacked = torch.stack(list(members.values()))  # (teachers, views, classes)
    return combine_logits(stacked, ensemble.method, ensemble.weights, ensemble.tau), members, teachers, cached


@dataclass
class Streamed:
    table: pd.DataFrame  # the checked sample of soft labels, rebuilt (soft_label_table)
    teachers: dict[str, dict]
    confidence: float  # means over every view of the combined teachers' output
    entropy: float
    accuracy: float | None


def top_k_soft_labels(
    params: Params, images, views: Views, view_labels: torch.Tensor, fill: torch.Tensor, directory: Path, k: int
) -> Streamed:
    """The teachers' top-k probabilities on every view, written to shards chunk by chunk as the teachers
    run (memory: one chunk of views). Great Expectations checks an evenly spaced sample of at most
    CHECK_ROWS views, rebuilt as the student reads them."""
    device = resolve_device(params.device)
    cfg = params.transfer
    models = {}
    teachers: dict[str, dict] = {}
    for name in params.teachers:
        teacher_dir = params.paths.teachers / name
        models[name], _ = load_model_dir(teacher_dir, device)
        teachers[name] = {"teacher_sha256": sha256_file(weights_file(teacher_dir))}
    total = len(views.src)
    stride = max(1, -(-total // CHECK_ROWS))
    correct = {name: 0 for name in [*models, ""]}
    labeled = int((view_labels != UNLABELED).sum())
    confidence = entropy = 0.0
    checked: list[torch.Tensor] = []
    num_classes = load_meta(params.paths.prepared).num_classes
    writer = SoftLabelWriter(directory, k, num_classes)
    chunk = rows_per_pass(tuple(images.shape[1:]), 4096, render_budget())
    for first in tqdm(range(0, total, chunk), desc="teacher views (top-k)", unit="chunk", mininterval=1.0):
        x = views.render(images, slice(first, first + chunk), fill)
        members = {name: predict_logits(model, x, device) for name, model in models.items()}
        if len(members) == 1:
            logits = next(iter(members.values()))
        else:
            ens = cfg.ensemble
            logits = combine_logits(torch.stack(list(members.values())), ens.method, ens.weights, ens.tau)
        logp, index = top_k(logits, k)
        writer.add(logp, index)
        y = view_labels[first : first + len(x)]
        for name, z in [*members.items(), ("", logits)]:
            correct[name] += int((z.argmax(1)[y != UNLABELED] == y[y != UNLABELED]).sum())
        p = F.softmax(logits.double(), dim=1)
        confidence += float(p.max(1).values.sum())
        entropy += float(-(p * p.clamp_min(1e-12).log()).sum())
        rows = torch.arange(first, first + len(x))
        picked = (rows % stride == 0).nonzero().flatten()
        checked.append(rebuild(logp[picked], index[picked], num_classes, "spread"))
    writer.close()
    for name in models:
        teachers[name]["accuracy_on_views"] = correct[name] / labeled if labeled else None
    return Streamed(
        table=soft_label_table(torch.cat(checked)),
        teachers=teachers,
        confidence=confidence / max(total, 1),
        entropy=entropy / max(total, 1),
        accuracy=correct[""] / labeled if labeled else None,
    )


def run(params: Params) -> None:
    if params.data.is_graph:  # kdcore/graph/pipeline.py
        from kdcore.checkpoint import load_model_dir
        from kdcore.graph import pipeline

        graph, _ = pipeline.prepared_graph(params.paths.prepared)
        teachers = {name: load_model_dir(params.paths.teachers / name)[0] for name in params.teachers}
        report = params.paths.reports / "validation" / "build_transfer.html"
        pipeline.write_soft_labels(graph, teachers, params.transfer.ensemble, params.paths.transfer, report)
        return
    cfg = params.transfer
    out = params.paths.transfer
    prepared = load_meta(params.paths.prepared)
    params.check_for_kind(prepared.meta.get("kind", "image"))
    pool = build_pool(
        params.paths.prepared,
        prepared.meta["sha256"],
        params.paths.synthetic / SYNTHETIC_FILE,
        source=cfg.source,
        exclude=excluded_indices(prepared.meta["class_names"], cfg.exclude_classes),
        max_per_class=cfg.max_per_class,
        synthetic_share=cfg.synthetic_share,
        include_teacher_train=cfg.include_teacher_train,
        labeled=cfg.labeled,
    )
    if len(pool.images) == 0:
        raise DataError(f"transfer.source={cfg.source!r}: the transfer set is empty; synth.images must be at least 1")
    images = pool.images
    views = make_views(
        len(images), cfg.views, cfg.shift, params.seed, cfg.mix, cfg.mix_share, cfg.mix_alpha, images.shape[-2:],
        crop=cfg.crop_for(prepared.input_shape),
    )  # fmt: skip
    view_labels = pool.labels[views.src]
    if views.mix is not None:  # a mixed view has no hard label: its target is the teacher's output on it
        view_labels = torch.where(views.mix.partner >= 0, UNLABELED, view_labels)
    data_sha = pool.data_sha

    teachers: dict[str, dict] = {}
    ensemble = cfg.ensemble
    k = cfg.cache_topk
    if k is None:
        exact = exact_soft_labels(params, images, views, view_labels, data_sha, prepared.fill)
        logits, members, teachers, cached = exact
        table = soft_label_table(logits)
        confidence, entropy = float(table["confidence"].mean()), float(table["entropy"].mean())
        on_views = view_accuracy(logits, view_labels)
    else:
        staged = params.paths.work / "partial" / SOFT_LABELS_DIR  # moved into place once the checks pass
        shutil.rmtree(staged, ignore_errors=True)
        streamed = top_k_soft_labels(params, images, views, view_labels, prepared.fill, staged, k)
        table, teachers, cached = streamed.table, streamed.teachers, 0
        confidence, entropy, on_views = streamed.confidence, streamed.entropy, streamed.accuracy
    validate_or_fail(
        {
            "soft_labels": (
                table,
                soft_label_checks(prepared.num_classes, cfg.min_mean_confidence, cfg.source == "real"),
            )
        },
        suite="build_transfer",
        report_path=params.paths.reports / "validation" / "build_transfer.html",
    )

    save_pool(out / POOL_FILE, pool, cfg.model_dump(mode="json"))
    save_tensors(out / VIEWS_FILE, {**views.as_tensors(), "y": view_labels})
    shutil.rmtree(out / SOFT_LABELS_DIR, ignore_errors=True)  # one form of soft labels, as the pool's settings say
    (out / LOGITS_FILE).unlink(missing_ok=True)
    if k is not None:
        out.mkdir(parents=True, exist_ok=True)
        shutil.move(staged, out / SOFT_LABELS_DIR)
    else:
        save_tensors(
            out / LOGITS_FILE,
            {"logits": logits, **{f"teacher/{name}": t for name, t in members.items()}},
            meta={"teachers": ",".join(teachers), "ensemble": ensemble.method if len(teachers) > 1 else "single"},
        )
    summary = {
        "views": len(views.src),
        "samples": len(images),
        "source": cfg.source,
        "real_samples": pool.real,
        "synthetic_samples": pool.synthetic,
        "labeled_views": int((view_labels != UNLABELED).sum()),
        "mixed_views": int((views.mix.partner >= 0).sum()) if views.mix is not None else 0,
        "ensemble": ensemble.model_dump(mode="json") if len(teachers) > 1 else None,
        "teacher_accuracy_on_views": on_views,
        "mean_confidence": confidence,
        "mean_entropy": entropy,
        "teachers": teachers,
        **({"cache_topk": k, "soft_label_bytes_per_view": 4 * k} if k is not None else {}),
    }
    write_json(out / "summary.json", summary)
    single = f"teacher {next(iter(teachers))}"
    combined = f"{ensemble.method} of {len(teachers)} teachers" if len(teachers) > 1 else single
    stored = f"top-{k} probabilities" if k is not None else "logits"
    print(
        f"build_transfer: {len(images)} samples ({pool.real} real, {pool.synthetic} synthetic) "
        f"x {cfg.views} views = {len(views.src)} views, "
        f"soft labels ({stored}) from the {combined} ({cached} of {len(teachers)} from cache); "
        f"mean confidence {summary['mean_confidence']:.3f} -> {out}"
    )
