"""The one training loop: seeded, resumable from per-epoch checkpoints, logged with dvclive.

`fit(model, train_set, loss_fn, cfg, ...)` is used for the teacher, the distilled student and the
scratch student alike; they differ only in their training set and loss.
"""

from __future__ import annotations

import math
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import Protocol

import torch
from torch import nn
from tqdm import tqdm

from kdcore import distributed
from kdcore.batches import EpochBatches, epoch_batches
from kdcore.checkpoint import TrainingCheckpoint
from kdcore.config import TrainConfig
from kdcore.data.prepared import Split
from kdcore.data.transforms import random_shifts, shift_images
from kdcore.inference import predict_logits, render_budget, rows_per_pass
from kdcore.losses import LossTerms
from kdcore.models import build_model
from kdcore.runtime import accel, autocast, seed_everything
from kdcore.transfer.views import ViewCrop, ViewMix, Views

RENDERED_BYTES = 256 << 20  # views of in-memory images up to this size are rendered once, before training
LossFn = Callable[[torch.Tensor, dict[str, torch.Tensor]], LossTerms]


class TrainSet(Protocol):
    def __len__(self) -> int: ...

    def batch(self, idx: torch.Tensor, generator: torch.Generator) -> dict[str, torch.Tensor]:
        """The samples at `idx` as tensors; "x" (batch, C, H, W) always, "y" and others per set."""
        ...


@dataclass
class ImageSet:
    """Labeled images, optionally shifted at random on the fly (a new shift every time a sample is drawn)."""

    x: torch.Tensor  # (N, C, H, W) normalised
    y: torch.Tensor  # (N,)
    fill: torch.Tensor  # (C,) normalised value of a black pixel
    shift: int = 0

    def __len__(self) -> int:
        return len(self.y)

    def batch(
        self, idx: torch.Tensor, generator: torch.Generator, part: slice | None = None
    ) -> dict[str, torch.Tensor]:
        """`part`: only these samples of the batch (one rank's), shifted as in the whole batch."""
        whole = len(idx)
        part = part if part is not None else slice(None)
        idx = idx[part]
        x = self.x[idx]
        if self.shift:
            dx, dy = random_shifts(whole, self.shift, generator)  # drawn for the whole batch: the same stream
            x = shift_images(x, dx[part], dy[part], self.fill)
        return {"x": x, "y": self.y[idx]}


@dataclass
class ViewSet:
    """Fixed views (source sample, shift) of a set of images, with the teacher's logits on exactly those views.

    Teacher and student see the same input, as consistent distillation requires (Beyer et al. 2022).
    """

    x: torch.Tensor  # (N, C, H, W) normalised source images
    src: torch.Tensor  # (V,) index into x
    dx: torch.Tensor  # (V,)
    dy: torch.Tensor  # (V,)
    y: torch.Tensor  # (V,) label, -1 where the sample has none
    fill: torch.Tensor  # (C,)
    teacher_logits: torch.Tensor | None = None  # (V, classes)
    extras: dict[str, torch.Tensor] = field(default_factory=dict)  # per-view tensors, e.g. teacher features
    mix: ViewMix | None = None  # mixup / cutmix partners of the views
    crop: ViewCrop | None = None  # random resized crops and flips of the views (natural images)
    rendered: torch.Tensor | None = field(default=None, repr=False)  # every view, rendered (render_all)

    def __len__(self) -> int:
        return len(self.src)

    def render_all(self, budget: int = RENDERED_BYTES) -> bool:
        """Renders every view once, when the source images are in memory and the views fit in `budget`
        bytes: the same tensors `batch` would render, made once rather than every epoch (the small data's
        fast path). Returns whether it did; larger sets are rendered batch by batch."""
        if self.rendered is not None:
            return True
        if not isinstance(self.x, torch.Tensor) or len(self) * self.x[0].numel() * 4 > budget:
            return False
        step = rows_per_pass(tuple(self.x.shape[1:]), 8192, render_budget())
        views = self.views
        self.rendered = torch.cat(
            [
                views.render(self.x, torch.arange(i, min(i + step, len(self))), self.fill)
                for i in range(0, len(self), step)
            ]
        )
        return True

    @property
    def views(self) -> Views:
        return Views(self.src, self.dx, self.dy, self.mix, self.crop)

    def batch(
        self, idx: torch.Tensor, generator: torch.Generator, part: slice | None = None
    ) -> dict[str, torch.Tensor]:
        if part is not None:
            idx = idx[part]
        x = _take(self.rendered, idx) if self.rendered is not None else self.views.render(self.x, idx, self.fill)
        out = {"x": x, "y": _take(self.y, idx)}
        if self.teacher_logits is not None:
            out["teacher_logits"] = _take(self.teacher_logits, idx)
        out.update({name: _take(values, idx) for name, values in self.extras.items()})
        return out


def _take(values, idx: torch.Tensor):
    """values[idx]: index_select for tensors (a third of advanced indexing's time on small batches)."""
    return values.index_select(0, idx) if isinstance(values, torch.Tensor) else values[idx]


def make_optimizer(model: nn.Module, cfg: TrainConfig) -> torch.optim.Optimizer:
    params = [p for p in model.parameters() if p.requires_grad]
    if cfg.optimizer == "sgd":
        return torch.optim.SGD(params, lr=cfg.lr, momentum=cfg.momentum, weight_decay=cfg.weight_decay, nesterov=True)
    if cfg.optimizer == "adamw":
        return torch.optim.AdamW(params, lr=cfg.lr, weight_decay=cfg.weight_decay)
    return torch.optim.Adam(params, lr=cfg.lr, weight_decay=cfg.weight_decay)


def make_schedule(
    optimizer: torch.optim.Optimizer, cfg: TrainConfig, total_steps: int
) -> torch.optim.lr_scheduler.LambdaLR:
    if cfg.schedule == "cosine":
        return torch.optim.lr_scheduler.LambdaLR(
            optimizer, lambda step: 0.5 * (1 + math.cos(math.pi * step / total_steps))
        )
    return torch.optim.lr_scheduler.LambdaLR(optimizer, lambda step: 1.0)


class _LiveLog:
    """dvclive logging of per-epoch metrics; replays the history of a resumed run first."""

    def __init__(self, live_dir: Path | None) -> None:
        self.live = None
        if live_dir is not None:
            from dvclive import Live

            self.live = Live(dir=str(live_dir), save_dvc_exp=False, dvcyaml=None, report=None)

    def log(self, record: dict[str, float]) -> None:
        if self.live is None:
            return
        for name, value in record.items():
            if name not in ("epoch", "seconds"):  # seconds go to metrics/timings/: the logs stay byte-identical
                self.live.log_metric(name, value)
        self.live.next_step()

    def close(self) -> None:
        if self.live is not None:
            self.live.end()


def fit(
    model: nn.Module,
    train_set: TrainSet,
    loss_fn: LossFn,
    cfg: TrainConfig,
    *,
    seed: int,
    device: torch.device,
    checkpoint: TrainingCheckpoint | None = None,
    live_dir: Path | None = None,
    eval_set: tuple[torch.Tensor, torch.Tensor] | None = None,
    desc: str = "train",
    workers: int = 0,
    on_epoch: Callable[[dict[str, float]], bool] | None = None,
) -> list[dict[str, float]]:
    """Trains `model` in place for cfg.epochs; returns one metrics record per epoch. `on_epoch` gets each
    epoch's record and returns whether to go on (False: training stops there, e.g. a pruned search trial).

    The sample order of epoch e depends only on (seed, e), and each batch's randomness only on (seed, e,
    batch number) (kdcore/batches.py), so a run resumed from its checkpoint after epoch e continues
    exactly as the uninterrupted run would, and `workers` processes reading data from disk change nothing
    but the time.
    """
    model.to(device)
    writer = distributed.is_writer()
    n = len(train_set)
    steps_per_epoch = math.ceil(n / cfg.batch_size)
    optimizer = make_optimizer(model, cfg)
    schedule = make_schedule(optimizer, cfg, cfg.epochs * steps_per_epoch)
    history: list[dict[str, float]] = []
    start_epoch = 0
    state = checkpoint.load(model) if checkpoint is not None and writer else None
    if (state := distributed.from_writer(state)) is not None:  # the other ranks get rank 0's weights from DDP
        model.to(device)
        optimizer.load_state_dict(state["optimizer"])
        schedule.load_state_dict(state["schedule"])
        torch.set_rng_state(state["rng"])
        history = list(state["history"])
        start_epoch = int(state["epoch"]) + 1
        if writer:
            print(
                f"{desc}: resuming after epoch {start_epoch} of {cfg.epochs} from {checkpoint.directory}",
                file=sys.stderr,
            )
    speed = accel()
    if speed.channels_last:
        model.to(memory_format=torch.channels_last)
    net = distributed.wrap(model, device)  # the model itself in one process
    if speed.compile:
        net = torch.compile(net)
    scaler = torch.amp.GradScaler(device.type, enabled=speed.amp == torch.float16)
    layout = torch.channels_last if speed.channels_last else torch.contiguous_format

    live = _LiveLog(live_dir if writer else None)
    for record in history:
        live.log(record)
    bar = tqdm(
        total=cfg.epochs * steps_per_epoch,
        initial=start_epoch * steps_per_epoch,
        desc=desc,
        unit="step",
        file=sys.stderr,
        mininterval=1.0,
        dynamic_ncols=True,
        **({} if writer else {"disable": True}),  # one bar, rank 0's
    )
    try:
        for epoch in range(start_epoch, cfg.epochs):
            started = time.perf_counter()
            order = torch.randperm(n, generator=torch.Generator().manual_seed(seed * 100_003 + epoch))
            # running sums stay on the device (float64, as Python floats would be) so no step waits for the GPU
            sums: torch.Tensor | None = None  # the batch-size-weighted loss and its parts, summed
            correct = seen = torch.zeros((), dtype=torch.long, device=device)
            names: list[str] = []
            model.train()
            parts = None
            if distributed.world_size() > 1:  # this rank's part of each batch, its loss scaled by its share
                parts = partial(distributed.part_of_batch, me=distributed.rank(), size=distributed.world_size())
            batches = EpochBatches(train_set, order, cfg.batch_size, seed, epoch, parts)
            for batch, scale in epoch_batches(batches, workers):
                batch = {k: v.to(device) for k, v in batch.items()}
                if batch["x"].ndim == 4:
                    batch["x"] = batch["x"].contiguous(memory_format=layout)
                with autocast(device):
                    logits = net(batch["x"])  # (batch, classes)
                    terms = loss_fn(logits, batch)
                optimizer.zero_grad(set_to_none=True)
                scaler.scale(terms.total * scale if scale != 1.0 else terms.total).backward()
                scaler.step(optimizer)
                scaler.update()
                schedule.step()
                size = len(batch["x"]) if scale else 0
                names = names or ["loss", *(f"loss_{k}" for k in terms.parts)]
                values = torch.stack([terms.total, *terms.parts.values()]).detach().double() * size
                sums = (torch.zeros_like(values) if sums is None else sums) + values  # from +0.0, as a float sum
                labeled = (batch["y"] >= 0) & (scale > 0)
                correct = correct + ((logits.argmax(1) == batch["y"]) & labeled).sum()
                seen = seen + labeled.sum()
                bar.update(1)
            totals = dict(zip(names, sums.tolist(), strict=True)) if sums is not None else {}
            sums = distributed.sum_over_ranks({**totals, "_correct": correct.item(), "_seen": seen.item()})
            correct, seen = int(sums.pop("_correct")), int(sums.pop("_seen"))
            record = {"epoch": float(epoch + 1)}
            record.update({f"train/{k}": v / n for k, v in sums.items()})
            if seen:
                record["train/accuracy"] = correct / seen
            if eval_set is not None:
                logits = predict_logits(model, eval_set[0], device)
                record["eval/accuracy"] = float((logits.argmax(1) == eval_set[1]).float().mean())
            record["lr"] = optimizer.param_groups[0]["lr"]
            record["seconds"] = time.perf_counter() - started
            history.append(record)
            live.log(record)
            bar.set_postfix(
                loss=f"{record['train/loss']:.4f}",
                **({"eval_acc": f"{record['eval/accuracy']:.4f}"} if eval_set is not None else {}),
            )
            if checkpoint is not None and writer:
                checkpoint.save(
                    model,
                    {
                        "epoch": epoch,
                        "optimizer": optimizer.state_dict(),
                        "schedule": schedule.state_dict(),
                        "rng": torch.get_rng_state(),
                        "history": history,
                    },
                )
            if on_epoch is not None and not on_epoch(record):
                break
    finally:
        bar.close()
        live.close()
    model.eval()
    return history


def train_student(
    spec,
    cfg: TrainConfig,
    view_set: TrainSet,
    loss_fn: LossFn,
    *,
    input_shape: tuple[int, int, int],
    num_classes: int,
    test: Split,
    seed: int,
    device: torch.device,
    checkpoint: TrainingCheckpoint,
    live_dir: Path | None,
    desc: str,
    prepare: Callable[[nn.Module], nn.Module] | None = None,
    workers: int = 0,
) -> tuple[nn.Module, list[dict[str, float]]]:
    """Trains a fresh student of `spec` (a config.ModelSpec) on `view_set` with `loss_fn`, evaluated on
    `test` each epoch; returns it (on the CPU, in eval mode) and its history.

    The distilled and the scratch student both come from here: they differ only in targets and loss.
    `prepare` turns the fresh student into the module to train (e.g. with the loss's own trainable
    parts); the student alone is returned. The caller clears `checkpoint` once the student is saved."""
    seed_everything(seed)
    if isinstance(view_set, ViewSet):
        view_set.render_all()
    model = build_model(spec, input_shape, num_classes)
    trained = prepare(model) if prepare is not None else model
    history = fit(
        trained,
        view_set,
        loss_fn,
        cfg,
        seed=seed,
        device=device,
        checkpoint=checkpoint,
        live_dir=live_dir,
        eval_set=(test.x, test.y),
        desc=desc,
        workers=workers,
    )
    return model.cpu().eval(), history
