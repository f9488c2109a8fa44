"""distill: train the student on the transfer views against the teacher's cached logits (Hinton KD)."""

from __future__ import annotations

from functools import partial

from kdcore.config import Params
from kdcore.losses import LOSSES
from kdcore.stages.student import load_views, train_student


def run(params: Params) -> None:
    cfg = params.distill
    loss_fn = partial(LOSSES.get(cfg.loss), temperature=cfg.temperature, alpha=cfg.alpha)
    views = load_views(params, with_teacher=True)
    config = {"distill": cfg.model_dump(mode="json")}
    train_student(params, "distill", views, loss_fn, params.paths.student_kd, "student_kd", config)
