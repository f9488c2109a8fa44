"""The loss pieces synthesis methods share: BatchNorm statistics, image priors, teacher-student disagreement."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from kdcore.errors import ConfigError
from kdcore.losses.hinton import kd_divergence


class BatchNormStats:
    """Forward hooks on every BatchNorm2d of a model: how far each batch's statistics are from the running ones.

    For layer l with running mean mu_l and variance s2_l, and the batch's per-channel mean m_l(x)
    and variance v_l(x) at that layer's input: R_l(x) = ||m_l(x) - mu_l||_2 + ||v_l(x) - s2_l||_2
    (DeepInversion's feature-distribution regulariser, Yin et al. 2020, eq. 4).
    """

    def __init__(self, model: nn.Module, what: str) -> None:
        self.layers = [m for m in model.modules() if isinstance(m, nn.BatchNorm2d)]
        if not self.layers:
            raise ConfigError(
                f"{what} matches BatchNorm statistics, but the teacher has no BatchNorm2d layer; "
                "set synth.bn_weight: 0 or use a teacher with BatchNorm"
            )
        self.distances: list[torch.Tensor] = []
        self._handles = [m.register_forward_hook(self._hook) for m in self.layers]

    def _hook(self, module: nn.BatchNorm2d, inputs: tuple[torch.Tensor, ...], output: torch.Tensor) -> None:
        x = inputs[0]  # (batch, C, H, W)
        mean = x.mean(dim=(0, 2, 3))
        var = x.var(dim=(0, 2, 3), unbiased=False)
        self.distances.append(
            torch.linalg.vector_norm(mean - module.running_mean) + torch.linalg.vector_norm(var - module.running_var)
        )

    def loss(self, first_weight: float) -> torch.Tensor:
        """Mean over layers of R_l, the first layer weighted `first_weight` times (it shapes the pixels most)."""
        weights = [first_weight] + [1.0] * (len(self.distances) - 1)
        return sum(w * d for w, d in zip(weights, self.distances, strict=True)) / len(self.distances)

    def clear(self) -> None:
        self.distances.clear()

    def remove(self) -> None:
        for handle in self._handles:
            handle.remove()


def total_variation(x: torch.Tensor) -> torch.Tensor:
    """Mean absolute difference of neighbouring pixels, (N, C, H, W) -> scalar: a smoothness prior."""
    return (x[:, :, 1:] - x[:, :, :-1]).abs().mean() + (x[:, :, :, 1:] - x[:, :, :, :-1]).abs().mean()


def js_divergence(logits_a: torch.Tensor, logits_b: torch.Tensor, temperature: float = 3.0) -> torch.Tensor:
    """Jensen-Shannon divergence of softmax(a / T) and softmax(b / T), mean over the batch."""
    p, q = F.softmax(logits_a / temperature, dim=1), F.softmax(logits_b / temperature, dim=1)
    m = (0.5 * (p + q)).clamp_min(1e-12).log()
    return 0.5 * (F.kl_div(m, p, reduction="batchmean") + F.kl_div(m, q, reduction="batchmean"))


def random_roll(x: torch.Tensor, max_shift: int, generator: torch.Generator) -> torch.Tensor:
    """Rolls the whole batch by one random (dy, dx) of up to `max_shift` pixels (DeepInversion's jitter)."""
    if max_shift == 0:
        return x
    dy, dx = (int(v) for v in torch.randint(-max_shift, max_shift + 1, (2,), generator=generator))
    return torch.roll(x, shifts=(dy, dx), dims=(2, 3))


def cosine_lr(base: float, step: int, total: int) -> float:
    return base * 0.5 * (1 + torch.cos(torch.tensor(torch.pi * step / max(total, 1))).item())


def train_proxy_student(
    student: nn.Module,
    teacher: nn.Module,
    pool: torch.Tensor,
    steps: int,
    batch_size: int,
    generator: torch.Generator,
    temperature: float = 4.0,
) -> None:
    """A few KD steps of the proxy student on random batches of `pool` (teacher frozen, in eval mode)."""
    optimizer = torch.optim.Adam(student.parameters(), lr=1e-3)
    student.train()
    for _ in range(steps):
        idx = torch.randint(0, len(pool), (min(batch_size, len(pool)),), generator=generator)
        x = pool[idx]
        with torch.no_grad():
            target = teacher(x)
        loss = kd_divergence(student(x), target, temperature)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
    student.eval()
