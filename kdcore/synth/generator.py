"""`generator`: a generator network trained against the teacher, then sampled (DAFL, Chen et al. 2019,
"Data-Free Learning of Student Networks"), with an adversarial variant as an option."""

from __future__ import annotations

import math
from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch import nn

from kdcore.errors import ConfigError
from kdcore.synth import SYNTHESIZERS, StepCheckpoint, SynthContext, Synthesizer
from kdcore.synth.priors import BatchNormStats, js_divergence, train_proxy_student

SAVE_EVERY = 100  # generator steps between checkpoints


class Generator(nn.Module):
    """DAFL's generator: z (latent) -> linear -> (128, H/4, W/4) -> 2x (upsample, conv 3x3, BN, LeakyReLU)
    -> conv 3x3 -> tanh squashed into the valid pixel range. Any H, W: the output is cropped."""

    def __init__(self, latent_dim: int, input_shape: tuple[int, int, int]) -> None:
        super().__init__()
        c, h, w = input_shape
        self.shape = input_shape
        self.h0, self.w0 = math.ceil(h / 4), math.ceil(w / 4)
        self.project = nn.Sequential(
            nn.Linear(latent_dim, 128 * self.h0 * self.w0), nn.BatchNorm1d(128 * self.h0 * self.w0)
        )
        self.body = nn.Sequential(
            nn.Upsample(scale_factor=2),
            nn.Conv2d(128, 128, 3, padding=1),
            nn.BatchNorm2d(128),
            nn.LeakyReLU(0.2, inplace=True),
            nn.Upsample(scale_factor=2),
            nn.Conv2d(128, 64, 3, padding=1),
            nn.BatchNorm2d(64),
            nn.LeakyReLU(0.2, inplace=True),
            nn.Conv2d(64, c, 3, padding=1),
        )

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        x = self.project(z).view(len(z), 128, self.h0, self.w0)
        _, h, w = self.shape
        return self.body(x)[:, :, :h, :w]  # (batch, C, H, W), unbounded: squash before use


class PenultimateFeatures:
    """The input of the teacher's last Linear layer (the features the logits are read from), by a hook."""

    def __init__(self, model: nn.Module) -> None:
        linears = [m for m in model.modules() if isinstance(m, nn.Linear)]
        if not linears:
            raise ConfigError("synth.activation_weight needs a teacher whose logits come from a Linear layer")
        self.value: torch.Tensor | None = None
        self._handle = linears[-1].register_forward_hook(self._hook)

    def _hook(self, module: nn.Module, inputs: tuple[torch.Tensor, ...], output: torch.Tensor) -> None:
        self.value = inputs[0]


class GeneratorSynthesizer(Synthesizer):
    """Trains G so that the teacher's outputs on G(z) look like its outputs on real data:

        min_G  w_ce CE(f_t(x), argmax f_t(x)) - w_a mean|phi_t(x)| - w_ie H(mean_batch softmax f_t(x))
               [+ w_bn sum_l R_l(x)] [- w_js JS(f_t(x), f_s(x))],   x = G(z), z ~ N(0, I)

    one-hot (confident outputs), activation (large penultimate features phi_t) and information
    entropy (every class equally often over the batch), the terms of DAFL (Chen et al. 2019).
    BatchNorm statistics matching is added when synth.bn_weight > 0; with synth.disagreement_weight > 0
    the generator also seeks teacher-student disagreement against a proxy student trained in
    turn (the adversarial variant: Micaelli & Storkey 2019, Fang et al. 2019). The pool is then
    `images` samples of the trained generator.
    """

    def __init__(self, ctx: SynthContext, cfg) -> None:
        self.ctx, self.cfg = ctx, cfg
        self.generator = Generator(cfg.latent_dim, ctx.input_shape).to(ctx.device)
        self.bn = (
            BatchNormStats(ctx.teacher, "synth.method=generator with bn_weight > 0") if cfg.bn_weight > 0 else None
        )
        self.features = PenultimateFeatures(ctx.teacher) if cfg.activation_weight > 0 else None
        self.proxy = ctx.make_proxy_student().to(ctx.device).eval() if cfg.disagreement_weight > 0 else None

    def sample(self, n: int, generator: torch.Generator) -> torch.Tensor:
        z = torch.randn((n, self.cfg.latent_dim), generator=generator).to(self.ctx.device)
        return self.ctx.bounds.squash(self.generator(z))

    def loss_parts(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        cfg = self.cfg
        if self.bn is not None:
            self.bn.clear()
        logits = self.ctx.teacher(x)  # (batch, classes)
        probs = F.softmax(logits, dim=1).mean(0)  # (classes,) the batch's class distribution
        parts = {
            "ce": cfg.ce_weight * F.cross_entropy(logits, logits.argmax(1)),
            "entropy": cfg.entropy_weight * (probs * probs.clamp_min(1e-12).log()).sum(),
        }
        if self.features is not None and self.features.value is not None:
            parts["activation"] = -cfg.activation_weight * self.features.value.abs().mean()
        if self.bn is not None:
            parts["bn"] = cfg.bn_weight * self.bn.loss(cfg.first_bn_weight)
        if self.proxy is not None:
            parts["js"] = -cfg.disagreement_weight * js_divergence(logits, self.proxy(x))
        return parts

    def prepare(self, generator: torch.Generator, tick: Callable[[int], None], checkpoint: StepCheckpoint) -> None:
        cfg = self.cfg
        optimizer = torch.optim.Adam(self.generator.parameters(), lr=cfg.lr, betas=(0.5, 0.999))
        start = 0
        if (saved := checkpoint.load()) is not None:
            self.generator.load_state_dict(saved["generator"])
            optimizer.load_state_dict(saved["optimizer"])
            generator.set_state(saved["rng"])
            if self.proxy is not None:
                self.proxy.load_state_dict(saved["proxy"])
            start = int(saved["step"])
            tick(start)
        self.generator.train()
        for step in range(start, cfg.steps):
            x = self.sample(cfg.batch_size, generator)
            total = sum(self.loss_parts(x).values())
            optimizer.zero_grad(set_to_none=True)
            total.backward()
            optimizer.step()
            if self.proxy is not None and (step + 1) % 10 == 0:
                with torch.no_grad():
                    pool = self.sample(cfg.batch_size, generator)
                train_proxy_student(self.proxy, self.ctx.teacher, pool, cfg.proxy_steps // 10 or 1, 128, generator)
            tick(1)
            if (step + 1) % SAVE_EVERY == 0 or step + 1 == cfg.steps:
                checkpoint.save(
                    {
                        "generator": self.generator.state_dict(),
                        "optimizer": optimizer.state_dict(),
                        "rng": generator.get_state(),
                        "proxy": self.proxy.state_dict() if self.proxy is not None else {},
                        "step": step + 1,
                    }
                )
        self.generator.eval()

    @torch.no_grad()
    def block(
        self, index: int, generator: torch.Generator, tick: Callable[[int], None] = lambda n: None
    ) -> tuple[torch.Tensor, torch.Tensor]:
        x = self.sample(self.cfg.batch_size, generator)
        return x.cpu(), torch.full((len(x),), -1, dtype=torch.long)


@SYNTHESIZERS.register("generator")
def build_generator(ctx: SynthContext, cfg) -> GeneratorSynthesizer:
    return GeneratorSynthesizer(ctx, cfg)
