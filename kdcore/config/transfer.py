"""The transfer set (which images, how many views) and the data-free synthesis that can make it."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import (
    Field,
    NonNegativeFloat,
    NonNegativeInt,
    PositiveFloat,
    PositiveInt,
    field_validator,
    model_validator,
)

from kdcore.schema import Section


class EnsembleConfig(Section):
    """How the teachers' outputs become one set of soft labels (kdcore/transfer/ensemble.py)."""

    method: Literal["mean", "weights", "confidence"] = Field(
        default="mean", description="mean of probabilities | fixed weights | per-sample confidence (low entropy)."
    )
    weights: list[NonNegativeFloat] | None = Field(default=None, description="method=weights: one per teacher.")
    tau: PositiveFloat = Field(default=1.0, description="method=confidence: weights are softmax(-entropy / tau).")


class TransferConfig(Section):
    """The transfer set: which images, how many views of each, and the soft-label checks."""

    source: Literal["real", "synthetic", "mixed"] = Field(
        default="real",
        description="real: the transfer split | synthetic: the synthesize stage's images only | mixed: both.",
    )
    synthetic_share: float = Field(
        default=0.5, gt=0.0, lt=1.0, description="source=mixed: share of the transfer samples that are synthetic."
    )
    exclude_classes: list[str] = Field(
        default_factory=list,
        description="Class names left out of the transfer set (real: by label; synthetic: "
        "by the teacher's prediction).",
    )
    max_per_class: PositiveInt | None = Field(
        default=None, description="Keep at most this many transfer samples of each class (the first ones)."
    )
    views: PositiveInt = Field(default=1, le=256, description="Views per sample; view 0 is the image itself.")
    shift: NonNegativeInt = Field(default=2, le=8, description="Views 1.. are random shifts of up to this many pixels.")
    augment: Literal["auto", "shift", "crop"] = Field(
        default="auto",
        description="What views 1.. are: shift (random shifts, for digits and other small grayscale images) | crop "
        "(random resized crops and flips, for natural images) | auto: crop for 3-channel images or sides of 64 "
        "pixels or more, shift otherwise.",
    )
    crop_scale: list[float] = Field(
        default=[0.35, 1.0],
        min_length=2,
        max_length=2,
        description="augment=crop: [low, high] of the crop's share of the image's area, uniform.",
    )
    crop_ratio: list[float] = Field(
        default=[0.75, 4 / 3],
        min_length=2,
        max_length=2,
        description="augment=crop: [low, high] of the crop's aspect ratio (width / height), log-uniform.",
    )
    flip: bool = Field(default=True, description="augment=crop: flip half the cropped views horizontally.")
    mix: Literal["none", "mixup", "cutmix", "both"] = Field(
        default="none", description="Mix a second image into views 1..: mixup, cutmix or both (function matching)."
    )
    mix_share: float = Field(default=0.5, ge=0.0, le=1.0, description="Share of views 1.. that are mixed.")
    mix_alpha: PositiveFloat = Field(default=1.0, description="The mixing weight lam ~ Beta(mix_alpha, mix_alpha).")
    include_teacher_train: bool = Field(
        default=False, description="Add the teacher's training split to the transfer set."
    )
    labeled: bool = Field(
        default=True, description="The transfer split's labels may be used (false: treat it as unlabeled)."
    )
    min_mean_confidence: float = Field(
        default=0.5, ge=0.0, le=1.0, description="Soft-label check: mean max-probability floor."
    )
    ensemble: EnsembleConfig = EnsembleConfig()
    cache_topk: PositiveInt | None = Field(
        default=None,
        description="Keep per view only the teacher's K largest probabilities (fp16) and their classes, in shards "
        "(kdcore/transfer/soft_labels.py); null: every view's float32 logits in one file.",
    )

    @field_validator("crop_scale", "crop_ratio")
    @classmethod
    def _ordered_range(cls, value: list[float], info) -> list[float]:
        low, high = value
        top = 1.0 if info.field_name == "crop_scale" else 10.0
        if not 0 < low <= high <= top:
            raise ValueError(f"needs 0 < low <= high <= {top:g}")
        return value

    def crop_for(self, input_shape: tuple[int, ...]) -> tuple[tuple[float, float], tuple[float, float], bool] | None:
        """(scale, ratio, flip) of the crop views for samples of `input_shape`, or None for shifted views."""
        image = len(input_shape) == 3
        natural = image and (input_shape[0] == 3 or min(input_shape[1:]) >= 64)
        if self.augment == "crop" or (self.augment == "auto" and natural):
            return (tuple(self.crop_scale), tuple(self.crop_ratio), self.flip) if image else None
        return None

    @field_validator("exclude_classes", mode="before")
    @classmethod
    def _names_as_text(cls, value: Any) -> Any:
        """YAML reads `[3, 7]` as numbers; class names are text (the digits' names are "0".."9")."""
        return [str(v) for v in value] if isinstance(value, list) else value


class SynthChecks(Section):
    """Great Expectations floors for the synthetic set (kdcore/synth/checks.py)."""

    min_class_share: float = Field(
        default=0.02, ge=0.0, le=1.0, description="Every class must be this share of the teacher's predictions."
    )
    min_mean_confidence: float = Field(
        default=0.5, ge=0.0, le=1.0, description="Floor for the teacher's mean max-probability on the images."
    )
    min_diversity: float = Field(
        default=0.1, ge=0.0, description="Floor for the mean pairwise RMS distance between images (normalised)."
    )


class SynthConfig(Section):
    """Data-free transfer data made from a teacher alone (kdcore/synth/); used when transfer.source is not real."""

    method: str = Field(
        default="inversion",
        description="A name in kdcore.synth.SYNTHESIZERS: noise | inversion (DeepInversion) | generator (DAFL).",
    )
    teacher: str | None = Field(default=None, description="The teacher to invert (default: the first listed).")
    images: PositiveInt = Field(default=4096, description="Images in the synthetic pool.")
    batch_size: PositiveInt = Field(default=128, description="Images optimised (or generated) together.")
    steps: NonNegativeInt = Field(
        default=300, description="inversion: Adam steps per batch; generator: generator training steps in all."
    )
    lr: PositiveFloat = Field(default=0.1, description="Adam learning rate of the pixels (or the generator).")
    init_std: PositiveFloat = Field(default=1.0, description="Std of the Gaussian noise images start from.")
    jitter: NonNegativeInt = Field(default=2, le=8, description="Random rolls of up to this many pixels per step.")
    ce_weight: NonNegativeFloat = Field(default=1.0, description="Cross-entropy to the target (or pseudo) class.")
    bn_weight: NonNegativeFloat = Field(default=50.0, description="BatchNorm statistics matching, mean over layers.")
    first_bn_weight: PositiveFloat = Field(default=5.0, description="Extra factor on the first BatchNorm layer.")
    tv_weight: NonNegativeFloat = Field(default=0.1, description="Total-variation prior (L1).")
    l2_weight: NonNegativeFloat = Field(default=1e-3, description="L2 prior on the pixels.")
    disagreement_weight: NonNegativeFloat = Field(
        default=0.0,
        description="Rewards teacher-student disagreement (JS) against a proxy student trained alongside: "
        "Adaptive DeepInversion (inversion) or the adversarial generator (generator).",
    )
    proxy_steps: PositiveInt = Field(default=50, description="Proxy-student KD steps after each block or 10 steps.")
    activation_weight: NonNegativeFloat = Field(default=0.1, description="generator (DAFL): feature activation term.")
    entropy_weight: NonNegativeFloat = Field(default=5.0, description="generator (DAFL): class-balance entropy term.")
    latent_dim: PositiveInt = Field(default=100, description="generator: size of the noise vector z.")
    checks: SynthChecks = SynthChecks()

    @field_validator("method")
    @classmethod
    def _known_method(cls, name: str) -> str:
        from kdcore.synth import SYNTHESIZERS

        SYNTHESIZERS.get(name)  # an unknown name lists the registered ones
        return name

    @model_validator(mode="after")
    def _whole_batches(self) -> SynthConfig:
        if self.images % self.batch_size:
            raise ValueError(f"synth.images ({self.images}) must be a multiple of synth.batch_size ({self.batch_size})")
        return self
