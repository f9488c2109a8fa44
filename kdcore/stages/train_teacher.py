"""train_teacher: train the teacher on its split with hard labels (and online shifts, if set)."""

from __future__ import annotations

from kdcore.checkpoint import save_model_dir
from kdcore.config import Params
from kdcore.data.prepared import load_meta, load_split
from kdcore.losses import LOSSES
from kdcore.models import build_model, count_params
from kdcore.runtime import resolve_device, seed_everything
from kdcore.stages.common import training_checkpoint
from kdcore.training import ImageSet, fit


def run(params: Params) -> None:
    prepared = load_meta(params.paths.prepared)
    train, test = load_split(params.paths.prepared, "teacher_train"), load_split(params.paths.prepared, "test")
    device = resolve_device(params.device)
    seed_everything(params.seed)
    cfg = params.teacher
    model = build_model(cfg.model, prepared.input_shape, prepared.num_classes)
    checkpoint = training_checkpoint(params, "train_teacher", cfg, prepared.meta["sha256"])
    history = fit(
        model,
        ImageSet(train.x, train.y, prepared.fill, shift=cfg.train.shift),
        LOSSES.get("ce"),
        cfg.train,
        seed=params.seed,
        device=device,
        checkpoint=checkpoint,
        live_dir=params.paths.live / "teacher",
        eval_set=(test.x, test.y),
        desc="teacher",
    )
    save_model_dir(
        params.paths.teacher,
        model.cpu(),
        cfg.model,
        prepared.input_shape,
        prepared.num_classes,
        seed=params.seed,
        config={"teacher": cfg.model_dump(mode="json")},
    )
    checkpoint.clear()
    print(
        f"teacher: {cfg.model.name}, {count_params(model):,} parameters, "
        f"eval accuracy {history[-1]['eval/accuracy']:.4f} after {cfg.train.epochs} epochs -> {params.paths.teacher}"
    )
