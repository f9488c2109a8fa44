"""Increments of a continual-learning stream, and the scenarios that cut a data set into them.

An increment is a batch of new training data with test data of its own; R[i][j] of the accuracy
matrix is measured on increment j's test data. Scenarios (van de Ven, Tuytelaars and Tolias 2022,
"Three types of incremental learning"; the batch scenario is the plain "more data" case):

- `class`: each increment brings new classes (Split-MNIST: 5 increments of 2 digits); the model
  must tell all classes seen so far apart, with no hint of which increment a test sample is from.
- `task`: the same increments, but the increment (task) of a test sample is known, so the model
  only chooses among that increment's classes (a multi-head model, as masked logits).
- `domain`: every increment has all classes, its inputs drawn from a new domain; for images, the
  increment's images rotated by a growing angle (Rotated MNIST).
- `batch`: every increment has all classes from the same distribution: more data of known classes.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import torch
import torch.nn.functional as F

from kdcore.errors import ConfigError
from kdcore.registry import Registry

MODES = ("class", "task", "domain", "batch")


@dataclass(frozen=True)
class Increment:
    """One batch of new data: training samples and the test samples it is scored on."""

    name: str
    x: torch.Tensor  # (N, C, H, W) normalised
    y: torch.Tensor  # (N,) global class indices
    test_x: torch.Tensor
    test_y: torch.Tensor
    classes: tuple[int, ...]  # the classes it holds (task scenario: the only ones a prediction may take)
    task: int = 0  # its position in the stream
    meta: dict = field(default_factory=dict)  # e.g. {"angle": 30}


def rotate(x: torch.Tensor, degrees: float, fill: torch.Tensor) -> torch.Tensor:
    """(N, C, H, W) images rotated by `degrees` counter-clockwise about their centre (bilinear);
    corners that come from outside the image take the value `fill` (C,), a black pixel."""
    if degrees == 0:
        return x.clone()
    theta = math.radians(degrees)
    cos, sin = math.cos(theta), math.sin(theta)
    matrix = torch.tensor([[cos, -sin, 0.0], [sin, cos, 0.0]], dtype=x.dtype).expand(len(x), 2, 3)
    grid = F.affine_grid(matrix, list(x.shape), align_corners=False)
    fill = fill.to(x.dtype).view(1, -1, 1, 1)
    return F.grid_sample(x - fill, grid, mode="bilinear", padding_mode="zeros", align_corners=False) + fill


@dataclass(frozen=True)
class StreamData:
    """What a scenario cuts: the training pool and the test split, normalised, with global labels."""

    x: torch.Tensor
    y: torch.Tensor
    test_x: torch.Tensor
    test_y: torch.Tensor
    num_classes: int
    fill: torch.Tensor  # (C,) normalised black


SCENARIOS: Registry = Registry("lifelong scenario")


def _class_groups(num_classes: int, increments: int) -> list[tuple[int, ...]]:
    if num_classes % increments:
        raise ConfigError(
            f"lifelong.increments: {num_classes} classes do not split into {increments} increments of equal size"
        )
    size = num_classes // increments
    return [tuple(range(i * size, (i + 1) * size)) for i in range(increments)]


def _by_classes(data: StreamData, increments: int) -> list[Increment]:
    out = []
    for i, classes in enumerate(_class_groups(data.num_classes, increments)):
        keep = torch.isin(data.y, torch.tensor(classes))
        keep_test = torch.isin(data.test_y, torch.tensor(classes))
        name = "classes " + "+".join(map(str, classes))
        out.append(
            Increment(name, data.x[keep], data.y[keep], data.test_x[keep_test], data.test_y[keep_test], classes, i)
        )
    return out


def _parts(n: int, increments: int, seed: int) -> list[torch.Tensor]:
    """A seeded partition of range(n) into `increments` parts of (nearly) equal size."""
    order = torch.randperm(n, generator=torch.Generator().manual_seed(seed))
    return [part.sort().values for part in order.tensor_split(increments)]


@SCENARIOS.register("class")
def class_incremental(data: StreamData, increments: int, seed: int, rotation_step: float = 0.0) -> list[Increment]:
    """Split by class: increment i holds classes [i*K/n, (i+1)*K/n)."""
    return _by_classes(data, increments)


@SCENARIOS.register("task")
def task_incremental(data: StreamData, increments: int, seed: int, rotation_step: float = 0.0) -> list[Increment]:
    """The class split, scored with the task known (predictions among the increment's classes)."""
    return _by_classes(data, increments)


@SCENARIOS.register("domain")
def domain_incremental(data: StreamData, increments: int, seed: int, rotation_step: float = 15.0) -> list[Increment]:
    """A seeded partition of the training pool; part i and the whole test split rotated by i * step degrees."""
    classes = tuple(range(data.num_classes))
    out = []
    for i, part in enumerate(_parts(len(data.y), increments, seed)):
        angle = i * rotation_step
        out.append(
            Increment(
                f"rotated {angle:g} deg",
                rotate(data.x[part], angle, data.fill),
                data.y[part],
                rotate(data.test_x, angle, data.fill),
                data.test_y.clone(),
                classes,
                i,
                {"angle": angle},
            )
        )
    return out


@SCENARIOS.register("batch")
def batch_incremental(data: StreamData, increments: int, seed: int, rotation_step: float = 0.0) -> list[Increment]:
    """A seeded partition of the training pool; each part scored on a disjoint share of the test split."""
    classes = tuple(range(data.num_classes))
    tests = _parts(len(data.test_y), increments, seed + 1)
    return [
        Increment(f"batch {i}", data.x[part], data.y[part], data.test_x[tests[i]], data.test_y[tests[i]], classes, i)
        for i, part in enumerate(_parts(len(data.y), increments, seed))
    ]


def make_stream(scenario: str, data: StreamData, increments: int, seed: int, rotation_step: float = 15.0):
    if increments < 1:
        raise ConfigError(f"lifelong.increments must be at least 1, got {increments}")
    return SCENARIOS.get(scenario)(data, increments, seed, rotation_step=rotation_step)
