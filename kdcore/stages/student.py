"""What distill and train_student_scratch share: the transfer views and the student's training run.

The two differ only in their targets (soft labels or hard labels), never in model or budget.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from kdcore.artifacts import load_tensors
from kdcore.checkpoint import save_model_dir
from kdcore.config import Params
from kdcore.data.prepared import load_meta, load_split
from kdcore.models import build_model, count_params
from kdcore.runtime import resolve_device, seed_everything
from kdcore.stages.common import training_checkpoint
from kdcore.stages.transfer_set import transfer_images
from kdcore.training import LossFn, ViewSet, fit


def load_views(params: Params, with_teacher: bool) -> ViewSet:
    """The transfer views from build_transfer; with the teacher's logits on them if asked."""
    prepared = load_meta(params.paths.prepared)
    images, _ = transfer_images(params)
    views = load_tensors(params.paths.transfer / "views.safetensors")
    logits = load_tensors(params.paths.transfer / "teacher_logits.safetensors")["logits"] if with_teacher else None
    return ViewSet(images, views["src"], views["dx"], views["dy"], views["y"], prepared.fill, logits)


def train_student(
    params: Params,
    stage: str,
    view_set: ViewSet,
    loss_fn: LossFn,
    out_dir: Path,
    live_name: str,
    config: dict[str, Any],
) -> None:
    """Trains params.student on `view_set` with `loss_fn`; writes the model and its resolved config."""
    prepared = load_meta(params.paths.prepared)
    test = load_split(params.paths.prepared, "test")
    seed_everything(params.seed)
    cfg = params.student
    model = build_model(cfg.model, prepared.input_shape, prepared.num_classes)
    checkpoint = training_checkpoint(params, stage, cfg, config, prepared.meta["sha256"], len(view_set))
    history = fit(
        model,
        view_set,
        loss_fn,
        cfg.train,
        seed=params.seed,
        device=resolve_device(params.device),
        checkpoint=checkpoint,
        live_dir=params.paths.live / live_name,
        eval_set=(test.x, test.y),
        desc=live_name,
    )
    resolved = {"student": cfg.model_dump(mode="json"), "transfer": params.transfer.model_dump(mode="json"), **config}
    save_model_dir(
        out_dir, model.cpu(), cfg.model, prepared.input_shape, prepared.num_classes, seed=params.seed, config=resolved
    )
    checkpoint.clear()
    print(
        f"{stage}: {cfg.model.name}, {count_params(model):,} parameters, {len(view_set)} views, "
        f"eval accuracy {history[-1]['eval/accuracy']:.4f} -> {out_dir}"
    )
