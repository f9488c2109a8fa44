"""What distill and train_student_scratch share: the transfer views and the student's training run.

The two differ only in their targets (soft labels or hard labels), never in model or budget.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

from torch import nn

from kdcore.artifacts import load_tensors
from kdcore.checkpoint import save_model_dir
from kdcore.config import Params
from kdcore.data.prepared import load_meta, load_split
from kdcore.models import build_model, count_params
from kdcore.runtime import resolve_device, seed_everything
from kdcore.stages.common import training_checkpoint
from kdcore.stages.transfer_set import transfer_images, transfer_pool
from kdcore.training import LossFn, ViewSet, fit
from kdcore.transfer.views import Views, make_views


def load_views(params: Params) -> ViewSet:
    """The transfer views from build_transfer (real and/or synthetic images), with the (ensemble)
    teacher's logits on them."""
    prepared = load_meta(params.paths.prepared)
    pool = transfer_pool(params)
    stored = load_tensors(params.paths.transfer / "views.safetensors")
    views = Views.from_tensors(stored)
    logits = load_tensors(params.paths.transfer / "teacher_logits.safetensors")["logits"]
    return ViewSet(pool.images, views.src, views.dx, views.dy, stored["y"], prepared.fill, logits, mix=views.mix)


def scratch_views(params: Params) -> ViewSet:
    """The scratch baseline's views: the real transfer split, shifted as build_transfer shifts it,
    whatever transfer.source is, so the baseline stays the same when the distilled student's data changes."""
    prepared = load_meta(params.paths.prepared)
    images, labels = transfer_images(params)
    views = make_views(len(images), params.transfer.views, params.transfer.shift, params.seed)
    return ViewSet(images, views.src, views.dx, views.dy, labels[views.src], prepared.fill)


def train_student(
    params: Params,
    stage: str,
    view_set: ViewSet,
    loss_fn: LossFn,
    live_name: str | None,
    config: dict[str, Any],
    *,
    seed: int | None = None,
    prepare: Callable[[nn.Module], nn.Module] | None = None,
) -> tuple[nn.Module, list[dict[str, float]]]:
    """Trains a fresh params.student on `view_set` with `loss_fn`; returns it and its history.

    `prepare` turns the fresh student into the module to train (e.g. with the loss's own trainable
    parts); the student alone is returned."""
    prepared = load_meta(params.paths.prepared)
    test = load_split(params.paths.prepared, "test")
    seed = params.seed if seed is None else seed
    seed_everything(seed)
    cfg = params.student
    model = build_model(cfg.model, prepared.input_shape, prepared.num_classes)
    trained = prepare(model) if prepare is not None else model
    checkpoint = training_checkpoint(params, stage, seed, cfg, config, prepared.meta["sha256"], len(view_set))
    history = fit(
        trained,
        view_set,
        loss_fn,
        cfg.train,
        seed=seed,
        device=resolve_device(params.device),
        checkpoint=checkpoint,
        live_dir=params.paths.live / live_name if live_name else None,
        eval_set=(test.x, test.y),
        desc=live_name or stage,
    )
    checkpoint.clear()
    return model.cpu().eval(), history


def save_student(
    params: Params, model: nn.Module, out_dir: Path, config: dict[str, Any], stage: str, views: int
) -> None:
    """Writes the student and the config that made it."""
    prepared = load_meta(params.paths.prepared)
    cfg = params.student
    resolved = {"student": cfg.model_dump(mode="json"), "transfer": params.transfer.model_dump(mode="json"), **config}
    save_model_dir(
        out_dir, model, cfg.model, prepared.input_shape, prepared.num_classes, seed=params.seed, config=resolved
    )
    print(f"{stage}: {cfg.model.name}, {count_params(model):,} parameters, {views} views -> {out_dir}")
