"""A stream of increments learned one after another by one method; the accuracy matrix it makes."""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field, replace

import torch
from torch import nn

from kdcore.lifelong.memory import ExemplarMemory
from kdcore.lifelong.methods import (
    UPDATES,
    FineTune,
    LwFReplay,
    UpdateSettings,
    accuracy_on,
    features_of,
    frozen_copy,
    learn_increment,
)
from kdcore.lifelong.metrics import continual_metrics
from kdcore.lifelong.scenarios import Increment


@dataclass
class StreamResult:
    matrix: list[list[float]]  # R[i][j], T x T
    metrics: dict[str, float]  # acc, bwt, forgetting, newest
    seconds: list[float]  # wall time of each increment's update
    memory: ExemplarMemory
    models: list[nn.Module] = field(default_factory=list)  # the student after each increment (keep_models)
    losses: list[dict[str, float]] = field(default_factory=list)


def run_stream(
    stream: list[Increment],
    method_name: str,
    settings: UpdateSettings,
    *,
    mode: str,
    num_classes: int,
    make_student: Callable[[], nn.Module],
    seed: int,
    memory: int,
    selection: str = "herding",
    make_teacher: Callable[[], nn.Module] | None = None,
    start: tuple[nn.Module, nn.Module | None] | None = None,
    keep_models: bool = False,
    log: Callable[[str], None] = lambda _line: None,
) -> StreamResult:
    """Learns `stream` in order with `method_name`; returns the accuracy matrix and its metrics.

    Without `start` the first increment is learned from a fresh student (and, teacher-guided, a fresh
    teacher from `make_teacher`). With `start=(student, teacher)` those already know the first
    increment (a deployed student and its teacher): it is scored, not learned."""
    method = UPDATES.get(method_name)
    if method.teacher and start is None and make_teacher is None:
        raise ValueError("the teacher-guided method needs a teacher or make_teacher")
    if start is not None:
        student, teacher = start
        for model in (student, teacher):  # a loaded or frozen model is trained from here on
            for p in model.parameters() if model is not None else []:
                p.requires_grad_(True)
    else:
        torch.manual_seed(seed)
        student, teacher = make_student(), None
    buffer = ExemplarMemory(memory if method.replay else 0, selection, seed)
    result = StreamResult([], {}, [], buffer)
    for i, increment in enumerate(stream):
        history = stream[:i]
        started = time.perf_counter()
        losses: dict[str, float] = {}
        if i > 0 or start is None:
            previous = frozen_copy(student) if i > 0 else None
            if method.teacher:
                if teacher is None:
                    torch.manual_seed(seed + 1)
                    teacher = make_teacher()
                    teacher_method = FineTune
                else:
                    teacher_method = LwFReplay
                learn_increment(
                    teacher_method,
                    teacher,
                    increment,
                    history,
                    buffer,
                    replace(settings, steps=settings.teacher_steps),
                    mode=mode,
                    num_classes=num_classes,
                    seed=seed * 1000 + i + 500,
                    previous=frozen_copy(teacher) if i > 0 else None,
                )
            losses = learn_increment(
                method,
                student,
                increment,
                history,
                buffer,
                settings,
                mode=mode,
                num_classes=num_classes,
                seed=seed * 1000 + i,
                previous=previous,
                teacher=teacher if method.teacher else None,
            )
        if method.replay:
            buffer.update(increment.x, increment.y, increment.task, features_of(student))
        result.seconds.append(time.perf_counter() - started)
        result.losses.append(losses)
        seen = sorted({c for inc in stream[: i + 1] for c in inc.classes})
        row = [accuracy_on(student, inc, mode, seen, num_classes) for inc in stream]
        result.matrix.append(row)
        if keep_models:
            result.models.append(frozen_copy(student))
        log(f"{method_name}: after {increment.name}: " + " ".join(f"{a:.3f}" for a in row[: i + 1]))
    result.metrics = continual_metrics(result.matrix)
    return result
