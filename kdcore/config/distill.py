"""The distilled student's objective: loss terms from the TERMS registry, temperature, generations."""

from __future__ import annotations

from typing import Annotated, Literal, Union

from pydantic import Field, NonNegativeFloat, PositiveFloat, PositiveInt, model_validator

from kdcore.losses import TERMS
from kdcore.losses.hinton import CETerm, KDTerm
from kdcore.schema import Section

# every registered term's schema, told apart by `name`
LossTerm = Annotated[Union[tuple(TERMS.get(name) for name in TERMS.names())], Field(discriminator="name")]  # noqa: UP007
FEATURE_TERMS = tuple(name for name in TERMS.names() if TERMS.get(name).feature)


class DistillConfig(Section):
    """The distilled student's objective: a weighted sum of terms, and born-again generations."""

    temperature: PositiveFloat = Field(default=4.0, description="Softmax temperature T > 0 of kd and dkd.")
    terms: list[LossTerm] = Field(
        default_factory=lambda: [CETerm(name="ce", weight=0.1), KDTerm(name="kd", weight=0.9)],
        min_length=1,
        description="The loss: sum of weight * term.",
    )
    generations: PositiveInt = Field(
        default=1,
        le=10,
        description="Born-again networks: generation g+1 is distilled from generation g (1: from the teacher only).",
    )
    omitted_bias: Literal["auto", "off"] | NonNegativeFloat = Field(
        default="auto",
        description="With transfer.exclude_classes: raise the omitted classes' output bias (Hinton et al. 2015, "
        "section 3); auto: chosen on the validation split, shipped only if better there; a number: that bias.",
    )

    topk_rest: Literal["spread", "renormalize"] = Field(
        default="spread",
        description="With transfer.cache_topk: the mass the top K leave is spread over the other classes, or the "
        "top K are renormalised to 1 (kdcore/transfer/soft_labels.py).",
    )

    @model_validator(mode="after")
    def _generations_without_features(self) -> DistillConfig:
        features = [t.name for t in self.terms if t.name in FEATURE_TERMS]
        if self.generations > 1 and features:
            raise ValueError(f"feature terms ({', '.join(features)}) name teacher layers, so they need generations=1")
        return self
