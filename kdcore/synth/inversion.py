"""`inversion`: DeepInversion (Yin et al. 2020, "Dreaming to Distill: Data-free Knowledge Transfer via
DeepInversion"), with its adaptive variant as an option."""

from __future__ import annotations

from collections.abc import Callable

import torch
import torch.nn.functional as F

from kdcore.synth import SYNTHESIZERS, SynthContext, Synthesizer
from kdcore.synth.priors import (
    BatchNormStats,
    cosine_lr,
    js_divergence,
    random_roll,
    total_variation,
    train_proxy_student,
)


class InversionSynthesizer(Synthesizer):
    """Optimises a batch of images from noise, the teacher frozen:

        min_x  w_ce CE(f_t(j(x)), y) + w_bn sum_l R_l(j(x)) + w_tv TV(j(x)) + w_l2 ||x||^2
               - w_js JS(f_t(j(x)), f_s(j(x)))

    with y balanced target classes, j a random roll of up to `jitter` pixels each step, R_l the
    BatchNorm statistics distance (kdcore.synth.priors.BatchNormStats), Adam on the pixels with a
    cosine learning rate, and x clamped to valid pixel values after each step. The last term is
    Adaptive DeepInversion: a proxy student, trained by KD on the pool after each block, and new
    images are pushed to where it still disagrees with the teacher (Yin et al. 2020, section 3.3).
    """

    def __init__(self, ctx: SynthContext, cfg) -> None:
        self.ctx, self.cfg = ctx, cfg
        self.bn = BatchNormStats(ctx.teacher, "synth.method=inversion") if cfg.bn_weight > 0 else None
        self.proxy = ctx.make_proxy_student().to(ctx.device).eval() if cfg.disagreement_weight > 0 else None

    def loss_parts(self, x: torch.Tensor, targets: torch.Tensor, generator: torch.Generator) -> dict[str, torch.Tensor]:
        cfg = self.cfg
        jittered = random_roll(x, cfg.jitter, generator)
        if self.bn is not None:
            self.bn.clear()
        logits = self.ctx.teacher(jittered)  # (batch, classes)
        parts = {
            "ce": cfg.ce_weight * F.cross_entropy(logits, targets),
            "tv": cfg.tv_weight * total_variation(jittered),
            "l2": cfg.l2_weight * x.pow(2).mean(),
        }
        if self.bn is not None:
            parts["bn"] = cfg.bn_weight * self.bn.loss(cfg.first_bn_weight)
        if self.proxy is not None:
            parts["js"] = -cfg.disagreement_weight * js_divergence(logits, self.proxy(jittered))
        return parts

    def block(
        self, index: int, generator: torch.Generator, tick: Callable[[int], None] = lambda n: None
    ) -> tuple[torch.Tensor, torch.Tensor]:
        cfg, ctx = self.cfg, self.ctx
        b = cfg.batch_size
        x = ctx.bounds.clamp(torch.randn((b, *ctx.input_shape), generator=generator) * cfg.init_std)
        x = x.to(ctx.device).requires_grad_(True)
        targets = (torch.arange(b) + index * b) % ctx.num_classes  # every class equally often
        targets = targets.to(ctx.device)
        optimizer = torch.optim.Adam([x], lr=cfg.lr, betas=(0.5, 0.99))
        for step in range(cfg.steps):
            for group in optimizer.param_groups:
                group["lr"] = cosine_lr(cfg.lr, step, cfg.steps)
            total = sum(self.loss_parts(x, targets, generator).values())
            optimizer.zero_grad(set_to_none=True)
            total.backward()
            optimizer.step()
            with torch.no_grad():
                x.copy_(ctx.bounds.clamp(x))
            tick(1)
        return x.detach().cpu(), targets.cpu()

    def after_block(self, pool: torch.Tensor, generator: torch.Generator) -> None:
        if self.proxy is not None:
            train_proxy_student(
                self.proxy, self.ctx.teacher, pool.to(self.ctx.device), self.cfg.proxy_steps, 128, generator
            )

    def state(self) -> dict[str, torch.Tensor]:
        return {} if self.proxy is None else {f"proxy.{k}": v for k, v in self.proxy.state_dict().items()}

    def load_state(self, state: dict[str, torch.Tensor]) -> None:
        if self.proxy is not None:
            self.proxy.load_state_dict({k.removeprefix("proxy."): v for k, v in state.items()})


@SYNTHESIZERS.register("inversion")
def build_inversion(ctx: SynthContext, cfg) -> InversionSynthesizer:
    return InversionSynthesizer(ctx, cfg)
