"""The student architecture search (params `search`; the search_student stage, kdcore/search/)."""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import (
    AfterValidator,
    Field,
    NonNegativeFloat,
    NonNegativeInt,
    PositiveFloat,
    PositiveInt,
    field_validator,
    model_validator,
)

from kdcore.schema import Section


def _int_range(values: list[int]) -> list[int]:
    if len(values) not in (2, 3):
        raise ValueError(f"expected [low, high] or [low, high, step], got {values}")
    low, high, step = (*values, 1) if len(values) == 2 else values
    if low > high:
        raise ValueError(f"low {low} is above high {high}")
    if (high - low) % step:
        raise ValueError(f"high - low ({high} - {low}) is not a multiple of step {step}")
    return values


IntRange = Annotated[list[PositiveInt], AfterValidator(_int_range)]


def int_range(values: list[int]) -> tuple[int, int, int]:
    """(low, high, step) of an IntRange."""
    return (values[0], values[1], values[2] if len(values) == 3 else 1)


class MLPSpace(Section):
    """MLPs on the flattened input: `depth` hidden layers, each of a width from `width`."""

    depth: IntRange = Field(default=[1, 2], description="Hidden layers: [low, high].")
    width: IntRange = Field(default=[16, 128, 16], description="Width of each hidden layer: [low, high, step].")


class CNNSpace(Section):
    """The builtin convnet: `blocks` conv blocks, each with its own channel count, then a hidden layer."""

    blocks: IntRange = Field(default=[1, 2], description="Conv blocks: [low, high].")
    channels: IntRange = Field(default=[4, 16, 4], description="Channels of each block: [low, high, step].")
    kernel: list[Literal[1, 3, 5, 7]] = Field(default=[3], min_length=1, description="Kernel sizes to choose from.")
    hidden: IntRange = Field(default=[16, 64, 16], description="Width of the hidden layer: [low, high, step].")
    batchnorm: list[bool] = Field(default=[True], min_length=1, description="BatchNorm after each conv: choices.")


class SearchSpace(Section):
    """Families to search and each family's choices; a family left out (null) is not searched."""

    mlp: MLPSpace | None = MLPSpace()
    cnn: CNNSpace | None = CNNSpace()
    torchvision: list[str] = Field(
        default_factory=list, description="torchvision classifiers to include as they are (e.g. mobilenet_v3_small)."
    )

    @field_validator("torchvision")
    @classmethod
    def _known(cls, names: list[str]) -> list[str]:
        if not names:
            return names  # (torchvision is slow to import: only when a name needs checking)
        from kdcore.models import torchvision_names

        known = torchvision_names()
        unknown = [n for n in names if n not in known]
        if unknown:
            raise ValueError(
                f"unknown torchvision classifier(s) {', '.join(unknown)}; known: {', '.join(known[:6])}, ..."
            )
        return names


class SearchBudget(Section):
    """Constraints every searched student must meet, measured on the exported ONNX file in onnxruntime (one
    thread, the file `search.runtime` names) before it trains: a student over budget is never trained."""

    max_latency_ms: PositiveFloat | None = Field(default=None, description="Latency at batch 1, milliseconds.")
    max_latency_ms_b256: PositiveFloat | None = Field(default=None, description="Latency at batch 256, milliseconds.")
    max_bytes: PositiveInt | None = Field(default=None, description="Size of the ONNX file in bytes.")
    max_params: PositiveInt | None = Field(default=None, description="Parameters of the torch model.")


class SearchChoice(Section):
    """Which feasible trial becomes the chosen student: the most accurate on the validation split (`by:
    accuracy`), or the cheapest by `by` among those within `within_points` of the most accurate."""

    by: Literal["accuracy", "latency_ms", "size_bytes", "params"] = "accuracy"
    within_points: NonNegativeFloat = Field(default=0.5, le=100, description="Points of validation accuracy.")


class SearchConfig(Section):
    trials: NonNegativeInt = Field(
        default=0,
        description="Distinct students to train within budget (an over-budget draw is measured, never trained, and "
        "does not count; a repeated draw reuses a result); 0: no search.",
    )
    epochs: PositiveInt = Field(default=8, description="Most epochs a trial trains (student.train otherwise).")
    pruner: Literal["median", "halving", "none"] = Field(
        default="median", description="Stops trials whose validation accuracy trails others' at the same epoch."
    )
    prune_after: PositiveInt = Field(default=2, description="Epochs every trial trains before it can be stopped.")
    startup_trials: NonNegativeInt = Field(
        default=8, description="Random trials before TPE models the results (and before the pruner compares)."
    )
    seed: NonNegativeInt = Field(default=0, description="Added to the global seed for the sampler and the trials.")
    storage: str | None = Field(
        default=None,
        description="Optuna storage URL (a database several workers share); null: a SQLite file under paths.work.",
    )
    runtime: Literal["auto", "fp32", "int8"] = Field(
        default="auto", description="The ONNX file whose latency and size count: auto is int8 with export.int8."
    )
    budget: SearchBudget = SearchBudget()
    choose: SearchChoice = SearchChoice()
    space: SearchSpace = SearchSpace()

    @field_validator("storage")
    @classmethod
    def _database_url(cls, url: str | None) -> str | None:
        if url is None:
            return url
        from sqlalchemy.engine import make_url
        from sqlalchemy.exc import ArgumentError

        try:
            make_url(url)
        except ArgumentError:
            raise ValueError(
                f"{url!r} is not a database URL (sqlite:///path/study.db, postgresql://user@host/db, ...)"
            ) from None
        return url

    @model_validator(mode="after")
    def _prune_within_epochs(self) -> SearchConfig:
        if self.prune_after > self.epochs:
            raise ValueError(f"search.prune_after ({self.prune_after}) is above search.epochs ({self.epochs})")
        return self

    @field_validator("space")
    @classmethod
    def _some_family(cls, space: SearchSpace) -> SearchSpace:
        if space.mlp is None and space.cnn is None and not space.torchvision:
            raise ValueError("no family to search: give mlp, cnn or torchvision")
        return space
