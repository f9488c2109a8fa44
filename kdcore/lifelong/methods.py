"""Update methods: how a student learns one new increment. Each is a registered class whose flags
say which terms its loss has; `learn_increment` runs each through the one training loop
(`kdcore.training.fit`) that teachers, students and QAT use.

For a batch B of the increment's samples (and, with replay, a batch B_m from the exemplar memory),
with z the student's logits, z_old the previous student's (frozen), z_T the teacher's, the classes
A a prediction may take (all seen so far; in the task scenario the sample's own increment's) and
O the classes the previous student knew:

    L = CE(z|A, y) + lambda_lwf * T^2 KL(softmax(z_old|O / T) || softmax(z|O / T))
                   + lambda_t   * T^2 KL(softmax(z_T|A / T)   || softmax(z|A / T))

z|A are the logits of the classes in A (the others masked out). With `asymmetric_ce` (class
scenario), A for the new samples is the increment's own classes and for the replayed ones every
class seen so far: the new classes' gradients no longer push the old logits down, the main source
of the bias towards the newest classes (ER-ACE, Caccia et al. 2022). The budget is a number of
optimisation steps per increment, the same for every method.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass

import torch
from torch import nn
from torch.nn import functional as F

from kdcore.config import TrainConfig
from kdcore.lifelong.memory import ExemplarMemory, Features
from kdcore.lifelong.scenarios import Increment
from kdcore.losses import LossTerms
from kdcore.losses.hinton import kd_divergence
from kdcore.registry import Registry
from kdcore.training import fit

NEG = -1e9  # the logit of a class a prediction may not take


@dataclass(frozen=True)
class UpdateSettings:
    steps: int = 1000  # optimisation steps per increment
    batch_size: int = 64  # samples of the increment per step
    replay_batch_size: int = 64  # exemplars per step (replay methods)
    lr: float = 1e-3
    optimizer: str = "adam"  # adam | adamw | sgd (training.make_optimizer), at a constant learning rate
    weight_decay: float = 0.0
    temperature: float = 2.0
    lwf_weight: float = 1.0
    teacher_weight: float = 1.0
    teacher_steps: int = 500  # the teacher's own update per increment (teacher-guided)
    asymmetric_ce: bool = False  # class scenario: new samples' CE over the increment's classes only (ER-ACE)


class UpdateMethod:
    """Base: plain cross-entropy on the increment."""

    lwf = False
    replay = False
    teacher = False
    joint = False


UPDATES: Registry[type[UpdateMethod]] = Registry("lifelong method")


@UPDATES.register("finetune")
class FineTune(UpdateMethod):
    """Fine-tuning: L = CE on the new increment only. The forgetting baseline: nothing keeps the old
    classes (catastrophic forgetting; McCloskey and Cohen 1989)."""


@UPDATES.register("lwf")
class LwF(UpdateMethod):
    """Learning without Forgetting (Li and Hoiem 2017): L = CE(new) + lambda * T^2 KL(p_old^T || p^T)
    on the new data, over the classes the previous student knew: the student keeps its previous
    self's answers on the new inputs. No old data is kept."""

    lwf = True


@UPDATES.register("replay")
class Replay(UpdateMethod):
    """Experience replay (Rebuffi et al. 2017; Chaudhry et al. 2019, "On Tiny Episodic Memories"):
    L = CE on a batch of new samples joined with a batch from the class-balanced exemplar memory."""

    replay = True


@UPDATES.register("lwf_replay")
class LwFReplay(UpdateMethod):
    """LwF on new and replayed samples together (the iCaRL / end-to-end incremental learning recipe,
    Castro et al. 2018): L = CE(new + memory) + lambda * T^2 KL(p_old^T || p^T) on both."""

    lwf = True
    replay = True


@UPDATES.register("teacher")
class TeacherGuided(UpdateMethod):
    """Teacher-guided update: the teacher (larger, so it forgets less) is first updated on the
    increment with LwF + replay, then the student learns from it and from its previous self:
    L = CE(new + memory) + lambda_lwf * KD(previous student, old classes) + lambda_t * KD(teacher,
    classes seen so far), on new and replayed samples (distillation as in Hinton et al. 2015;
    continual distillation from a teacher as in Lee et al. 2019, "Overcoming catastrophic
    forgetting with unlabeled data in the wild")."""

    lwf = True
    replay = True
    teacher = True


@UPDATES.register("joint")
class Joint(UpdateMethod):
    """Joint training: L = CE on every increment seen so far (all old data kept), with the same step
    budget per increment. The upper bound that needs all the data the others do without."""

    joint = True


def allowed_mask(
    y_task: torch.Tensor, num_classes: int, mode: str, seen: list[int], tasks: dict[int, tuple]
) -> torch.Tensor:
    """(N, K) True where a prediction may take the class: task scenario the sample's increment's
    classes, class scenario every class seen so far, otherwise all."""
    mask = torch.zeros(len(y_task), num_classes, dtype=torch.bool)
    if mode == "task":
        for t, classes in tasks.items():
            mask[(y_task == t).nonzero().squeeze(1)[:, None], torch.tensor(classes)[None, :]] = True
    elif mode == "class":
        mask[:, seen] = True
    else:
        mask[:] = True
    return mask


def masked(logits: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    return logits.masked_fill(~mask, NEG)


def logits_of(model: nn.Module, x: torch.Tensor, batch: int = 1024) -> torch.Tensor:
    model.eval()
    with torch.no_grad():
        return torch.cat([model(x[i : i + batch]) for i in range(0, len(x), batch)]) if len(x) else x.new_zeros(0)


def features_of(model: nn.Module) -> Features:
    """x -> the input of the model's last Linear layer (its penultimate features), for herding."""
    last = [m for m in model.modules() if isinstance(m, nn.Linear)][-1]

    def features(x: torch.Tensor) -> torch.Tensor:
        taken: list[torch.Tensor] = []
        handle = last.register_forward_hook(lambda _m, inputs, _out: taken.append(inputs[0].detach()))
        try:
            logits_of(model, x)
        finally:
            handle.remove()
        return torch.cat(taken) if taken else x.new_zeros(0, last.in_features)

    return features


def old_task_kd(student: torch.Tensor, old: torch.Tensor, classes: list[tuple], temperature: float) -> torch.Tensor:
    """Mean over the previous student's heads (class groups) of the KD term on that head's logits."""
    terms = [kd_divergence(student[:, list(c)], old[:, list(c)], temperature) for c in classes]
    return torch.stack(terms).mean()


@dataclass
class IncrementStream:
    """The training set of one update, as `training.fit` reads it: one batch per step, drawn with
    replacement from the increment (and, with replay, from the exemplar memory) by its own seeded
    generator, with the frozen models' logits on exactly those samples."""

    x: torch.Tensor
    y: torch.Tensor
    task: torch.Tensor
    steps: int
    batch_size: int
    generator: torch.Generator
    prev: torch.Tensor | None = None  # (N, classes) the previous student's logits on x
    teach: torch.Tensor | None = None  # (N, classes) the teacher's logits on x
    memory: tuple[torch.Tensor, torch.Tensor, torch.Tensor] | None = None  # exemplars x, y, task
    memory_prev: torch.Tensor | None = None
    memory_teach: torch.Tensor | None = None
    replay_batch_size: int = 0

    def __len__(self) -> int:
        return self.steps  # fit with batch_size 1: one call of `batch` per step

    def batch(self, idx: torch.Tensor, generator: torch.Generator) -> dict[str, torch.Tensor]:
        n = len(self.y)
        i = torch.randint(n, (min(self.batch_size, n),), generator=self.generator)
        out = {"x": self.x[i], "y": self.y[i], "task": self.task[i], "new": torch.ones(len(i), dtype=torch.bool)}
        if self.prev is not None:
            out["prev"] = self.prev[i]
        if self.teach is not None:
            out["teach"] = self.teach[i]
        if self.memory is not None:
            mx, my, mtask = self.memory
            m = torch.randint(len(my), (min(self.replay_batch_size, len(my)),), generator=self.generator)
            out["x"], out["y"] = torch.cat([out["x"], mx[m]]), torch.cat([out["y"], my[m]])
            out["task"], out["new"] = (
                torch.cat([out["task"], mtask[m]]),
                torch.cat([out["new"], torch.zeros(len(m), dtype=torch.bool)]),
            )
            if self.prev is not None:
                out["prev"] = torch.cat([out["prev"], self.memory_prev[m]])
            if self.teach is not None:
                out["teach"] = torch.cat([out["teach"], self.memory_teach[m]])
        return out


class UpdateLoss:
    """The update's loss (the module docstring's L) as `training.fit` calls it: (logits, batch) ->
    LossTerms; it keeps the mean of each part over the last 10% of the steps."""

    def __init__(
        self,
        method: type[UpdateMethod],
        settings: UpdateSettings,
        *,
        mode: str,
        num_classes: int,
        seen: list[int],
        tasks: dict[int, tuple],
        own_classes: list[int],
        old_classes: list[int],
        old_heads: list[tuple],
    ) -> None:
        self.method, self.settings, self.mode, self.num_classes = method, settings, mode, num_classes
        self.seen, self.tasks, self.own_classes = seen, tasks, own_classes
        self.old_classes, self.old_heads = old_classes, old_heads
        self.step = 0
        self.tail = max(1, settings.steps // 10)
        self.tail_means: dict[str, float] = {}

    def __call__(self, logits: torch.Tensor, batch: dict[str, torch.Tensor]) -> LossTerms:
        s, mode = self.settings, self.mode
        allowed = allowed_mask(batch["task"], self.num_classes, mode, self.seen, self.tasks)
        if s.asymmetric_ce and mode == "class" and not self.method.joint:
            new = batch["new"]
            allowed[new] = allowed_mask(batch["task"][new], self.num_classes, mode, self.own_classes, self.tasks)
        parts = {"ce": F.cross_entropy(masked(logits, allowed), batch["y"])}
        if "prev" in batch:
            prev = batch["prev"]
            if mode == "task":
                parts["lwf"] = s.lwf_weight * old_task_kd(logits, prev, self.old_heads, s.temperature)
            elif mode == "class":
                old = self.old_classes
                parts["lwf"] = s.lwf_weight * kd_divergence(logits[:, old], prev[:, old], s.temperature)
            else:
                parts["lwf"] = s.lwf_weight * kd_divergence(logits, prev, s.temperature)
        if "teach" in batch:
            parts["teacher"] = s.teacher_weight * kd_divergence(
                masked(logits, allowed), masked(batch["teach"], allowed), s.temperature
            )
        if self.step >= s.steps - self.tail:
            for name, value in parts.items():
                self.tail_means[name] = self.tail_means.get(name, 0.0) + float(value.detach()) / self.tail
        self.step += 1
        return LossTerms(total=sum(parts.values()), parts=parts)


def learn_increment(
    method: type[UpdateMethod],
    model: nn.Module,
    increment: Increment,
    history: list[Increment],
    memory: ExemplarMemory | None,
    settings: UpdateSettings,
    *,
    mode: str,
    num_classes: int,
    seed: int,
    previous: nn.Module | None = None,
    teacher: nn.Module | None = None,
) -> dict[str, float]:
    """Trains `model` in place on `increment` (history: the increments learned before it, in order)
    for settings.steps steps of the one training loop (`training.fit`), with the optimiser of
    `settings` at a constant learning rate.

    Returns the mean of each loss part over the last 10% of the steps."""
    tasks = {inc.task: inc.classes for inc in [*history, increment]}
    seen = sorted({c for inc in [*history, increment] for c in inc.classes})
    old_classes = sorted({c for inc in history for c in inc.classes})
    if method.joint:
        x = torch.cat([inc.x for inc in [*history, increment]])
        y = torch.cat([inc.y for inc in [*history, increment]])
        task = torch.cat([torch.full((len(inc.y),), inc.task, dtype=torch.long) for inc in [*history, increment]])
    else:
        x, y = increment.x, increment.y
        task = torch.full((len(y),), increment.task, dtype=torch.long)
    use_memory = method.replay and memory is not None and len(memory) > 0
    use_lwf = bool(method.lwf and previous is not None and old_classes)
    use_teacher = method.teacher and teacher is not None
    stream = IncrementStream(x, y, task, settings.steps, settings.batch_size, torch.Generator().manual_seed(seed))
    # the frozen models' logits on every sample a batch can draw, computed once
    stream.prev = logits_of(previous, x) if use_lwf else None
    stream.teach = logits_of(teacher, x) if use_teacher else None
    if use_memory:
        stream.memory, stream.replay_batch_size = (memory.x, memory.y, memory.task), settings.replay_batch_size
        stream.memory_prev = logits_of(previous, memory.x) if use_lwf else None
        stream.memory_teach = logits_of(teacher, memory.x) if use_teacher else None
    loss = UpdateLoss(
        method, settings, mode=mode, num_classes=num_classes, seen=seen, tasks=tasks,
        own_classes=list(increment.classes), old_classes=old_classes, old_heads=[inc.classes for inc in history],
    )  # fmt: skip
    cfg = TrainConfig(
        epochs=1, batch_size=1, lr=settings.lr, optimizer=settings.optimizer, weight_decay=settings.weight_decay,
        schedule="constant",
    )  # fmt: skip
    fit(model, stream, loss, cfg, seed=seed, device=torch.device("cpu"), desc=f"update {increment.name}")
    return loss.tail_means


def accuracy_on(model: nn.Module, increment: Increment, mode: str, seen: list[int], num_classes: int) -> float:
    """Test accuracy on an increment: predictions among the classes seen so far (class scenario),
    the increment's own classes (task scenario) or all classes."""
    if len(increment.test_y) == 0:
        return float("nan")
    logits = logits_of(model, increment.test_x)
    task = torch.full((len(increment.test_y),), increment.task, dtype=torch.long)
    allowed = allowed_mask(task, num_classes, mode, seen, {increment.task: increment.classes})
    return float((masked(logits, allowed).argmax(1) == increment.test_y).float().mean())


def frozen_copy(model: nn.Module) -> nn.Module:
    twin = copy.deepcopy(model).eval()
    for p in twin.parameters():
        p.requires_grad_(False)
    return twin
