"""`noise`: Gaussian noise images the teacher labels. The floor of data-free distillation."""

from __future__ import annotations

from collections.abc import Callable

import torch

from kdcore.synth import SYNTHESIZERS, SynthContext, Synthesizer


class NoiseSynthesizer(Synthesizer):
    """x ~ N(0, init_std^2) per pixel in the normalised space, clamped to valid pixel values.

    No optimisation: what a student learns from the teacher's outputs on inputs that carry no
    information about the data (the baseline of Chen et al. 2019 and Yin et al. 2020)."""

    def __init__(self, ctx: SynthContext, batch_size: int, init_std: float) -> None:
        self.ctx, self.batch_size, self.init_std = ctx, batch_size, init_std

    def block(
        self, index: int, generator: torch.Generator, tick: Callable[[int], None] = lambda n: None
    ) -> tuple[torch.Tensor, torch.Tensor]:
        x = torch.randn((self.batch_size, *self.ctx.input_shape), generator=generator) * self.init_std
        return self.ctx.bounds.clamp(x), torch.full((self.batch_size,), -1, dtype=torch.long)


@SYNTHESIZERS.register("noise")
def build_noise(ctx: SynthContext, cfg) -> NoiseSynthesizer:
    return NoiseSynthesizer(ctx, cfg.batch_size, cfg.init_std)
