"""train_teacher: train one teacher (or each, one after another) on the teacher split with hard labels.

Each teacher has its own architecture, seed (added to the global seed), share of the teacher split
and online shifts. `dvc repro` runs `train_teacher@<name>` per teacher; the Prefect flow can run
them side by side.
"""

from __future__ import annotations

import torch

from kdcore.checkpoint import save_model_dir
from kdcore.config import Params
from kdcore.data.prepared import load_meta, load_split
from kdcore.errors import ConfigError
from kdcore.losses import LOSSES
from kdcore.models import build_model, count_params
from kdcore.runtime import resolve_device, seed_everything
from kdcore.stages.common import training_checkpoint
from kdcore.training import ImageSet, fit


def subset_index(n: int, fraction: float, seed: int) -> torch.Tensor:
    """A random `fraction` of range(n) (at least one sample), drawn by `seed`, in ascending order."""
    keep = max(1, round(fraction * n))
    return torch.randperm(n, generator=torch.Generator().manual_seed(seed))[:keep].sort().values


def train_one(params: Params, name: str) -> None:
    prepared = load_meta(params.paths.prepared)
    train, test = load_split(params.paths.prepared, "teacher_train"), load_split(params.paths.prepared, "test")
    cfg = params.teachers[name]
    seed = params.teacher_seed(name)
    x, y = train.x, train.y
    if cfg.subset < 1.0:
        index = subset_index(len(y), cfg.subset, seed)
        x, y = x[index], y[index]
    seed_everything(seed)
    model = build_model(cfg.model, prepared.input_shape, prepared.num_classes)
    checkpoint = training_checkpoint(params, f"train_teacher@{name}", seed, cfg, prepared.meta["sha256"])
    history = fit(
        model,
        ImageSet(x, y, prepared.fill, shift=cfg.train.shift),
        LOSSES.get("ce"),
        cfg.train,
        seed=seed,
        device=resolve_device(params.device),
        checkpoint=checkpoint,
        live_dir=params.paths.live / "teachers" / name,
        eval_set=(test.x, test.y),
        desc=f"teacher {name}",
    )
    out = params.paths.teachers / name
    save_model_dir(
        out,
        model.cpu(),
        cfg.model,
        prepared.input_shape,
        prepared.num_classes,
        seed=seed,
        config={"teacher": name, **cfg.model_dump(mode="json"), "train_samples": len(y)},
    )
    checkpoint.clear()
    print(
        f"teacher {name}: {cfg.model.name}, {count_params(model):,} parameters, {len(y)} samples, "
        f"eval accuracy {history[-1]['eval/accuracy']:.4f} after {cfg.train.epochs} epochs -> {out}"
    )


def run(params: Params, teacher: str | None = None) -> None:
    if teacher is not None and teacher not in params.teachers:
        raise ConfigError(f"--teacher {teacher!r}: not in params teachers ({', '.join(params.teachers)})")
    for name in [teacher] if teacher is not None else list(params.teachers):
        train_one(params, name)
