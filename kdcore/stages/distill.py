"""distill: train the student on the transfer views against the teacher's cached logits (Hinton KD)."""

from __future__ import annotations

from functools import partial

from kdcore.artifacts import load_tensors
from kdcore.checkpoint import save_model_dir
from kdcore.config import Params
from kdcore.data.prepared import load_meta, load_split
from kdcore.losses import LOSSES
from kdcore.models import build_model, count_params
from kdcore.runtime import resolve_device, seed_everything
from kdcore.stages.build_transfer import transfer_images
from kdcore.stages.common import training_checkpoint
from kdcore.training import ViewSet, fit


def load_views(params: Params, with_teacher: bool) -> ViewSet:
    prepared = load_meta(params.paths.prepared)
    images, _ = transfer_images(params)
    views = load_tensors(params.paths.transfer / "views.safetensors")
    logits = load_tensors(params.paths.transfer / "teacher_logits.safetensors")["logits"] if with_teacher else None
    return ViewSet(images, views["src"], views["dx"], views["dy"], views["y"], prepared.fill, logits)


def train_student(params: Params, stage: str, view_set: ViewSet, loss_fn, out_dir, live_name: str, extra) -> None:
    """Shared by distill and train_student_scratch: same student, same budget, different targets."""
    prepared = load_meta(params.paths.prepared)
    test = load_split(params.paths.prepared, "test")
    seed_everything(params.seed)
    cfg = params.student
    model = build_model(cfg.model, prepared.input_shape, prepared.num_classes)
    checkpoint = training_checkpoint(params, stage, cfg, extra, prepared.meta["sha256"], len(view_set))
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
    save_model_dir(out_dir, model.cpu(), cfg.model, prepared.input_shape, prepared.num_classes, seed=params.seed)
    checkpoint.clear()
    print(
        f"{stage}: {cfg.model.name}, {count_params(model):,} parameters, {len(view_set)} views, "
        f"eval accuracy {history[-1]['eval/accuracy']:.4f} -> {out_dir}"
    )


def run(params: Params) -> None:
    cfg = params.distill
    loss_fn = partial(LOSSES.get(cfg.loss), temperature=cfg.temperature, alpha=cfg.alpha)
    train_student(params, "distill", load_views(params, with_teacher=True), loss_fn, params.paths.student_kd, "student_kd", cfg)
