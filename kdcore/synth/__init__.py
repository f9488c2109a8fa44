"""Data-free transfer data: images made from a trained teacher alone (no real sample is read).

Every method is a `Synthesizer` in the `SYNTHESIZERS` registry. A synthesizer makes the pool one
block (one batch) at a time; `kdcore.synth.pool.synthesize_pool` runs it, keeps each finished block
on disk and resumes after a kill. Methods:
- `noise`: Gaussian noise the teacher labels, the floor every other method is compared with;
- `inversion`: DeepInversion (Yin et al. 2020), optionally adaptive (teacher-student competition);
- `generator`: a generator trained against the teacher (DAFL, Chen et al. 2019), optionally
  adversarial (the generator seeks teacher-student disagreement, Micaelli & Storkey 2019).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

import torch
from torch import nn

from kdcore.registry import Registry


@dataclass(frozen=True)
class PixelBounds:
    """Per-channel limits of a valid input in the normalised space: for images (0 - mean) / std and
    (1 - mean) / std, for vectors the normalised range of each feature."""

    low: torch.Tensor  # (C,)
    high: torch.Tensor  # (C,)

    @classmethod
    def from_stats(cls, mean: list[float], std: list[float]) -> PixelBounds:
        m, s = torch.tensor(mean, dtype=torch.float32), torch.tensor(std, dtype=torch.float32)
        return cls((0 - m) / s, (1 - m) / s)

    @classmethod
    def from_meta(cls, meta: dict) -> PixelBounds:
        """The prepared data's bounds (vectors: the range the teacher's split spans), else [0, 1] pixels."""
        if "bounds" in meta:
            bounds = meta["bounds"]
            return cls(torch.tensor(bounds["low"]), torch.tensor(bounds["high"]))
        return cls.from_stats(meta["mean"], meta["std"])

    def clamp(self, x: torch.Tensor) -> torch.Tensor:
        """(N, C, H, W) clamped channel by channel."""
        low, high = self.low.view(1, -1, 1, 1).to(x.device), self.high.view(1, -1, 1, 1).to(x.device)
        return torch.maximum(torch.minimum(x, high), low)

    def squash(self, x: torch.Tensor) -> torch.Tensor:
        """Maps any real (N, C, H, W) into the bounds smoothly (tanh), for generator outputs."""
        low, high = self.low.view(1, -1, 1, 1).to(x.device), self.high.view(1, -1, 1, 1).to(x.device)
        return low + (torch.tanh(x) + 1) * 0.5 * (high - low)


class Synthesizer:
    """Makes the pool block by block. Block i depends only on i, its random generator and `state()`
    as the blocks before it left it. The defaults suit methods without a prepare phase or state."""

    def prepare(self, generator: torch.Generator, tick: Callable[[int], None], checkpoint: StepCheckpoint) -> None:
        """Work done once before the blocks (training a generator), resumable through `checkpoint`;
        `tick(n)` reports n steps done."""
        return None

    def block(
        self, index: int, generator: torch.Generator, tick: Callable[[int], None]
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Images (batch, C, H, W) in the normalised space and their target classes (batch,), -1 if none."""
        raise NotImplementedError

    def after_block(self, pool: torch.Tensor, generator: torch.Generator) -> None:
        """Updates what later blocks depend on (a proxy student) from the pool so far."""
        return None

    def state(self) -> dict[str, torch.Tensor]:
        """Tensors that later blocks depend on, saved with each block so that a resumed run continues alike."""
        return {}

    def load_state(self, state: dict[str, torch.Tensor]) -> None:
        return None


class StepCheckpoint(Protocol):
    """Where a long `prepare` keeps its state: `load()` the last saved, `save(state)` after some steps."""

    def load(self) -> dict[str, Any] | None: ...

    def save(self, state: dict[str, Any]) -> None: ...

    directory: Path


@dataclass
class SynthContext:
    """What every method is built from: the teacher and the data's metadata, never a real sample."""

    teacher: nn.Module
    input_shape: tuple[int, int, int]
    num_classes: int
    bounds: PixelBounds
    device: torch.device
    make_proxy_student: Callable[[], nn.Module]  # a fresh student for the disagreement terms


SYNTHESIZERS: Registry = Registry("synthesis method")

# each method's module registers it
import kdcore.synth.generator  # noqa: E402,F401
import kdcore.synth.inversion  # noqa: E402,F401
import kdcore.synth.noise  # noqa: E402,F401
