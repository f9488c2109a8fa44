"""Lifelong updates of the distilled student as new increments of data arrive."""

from __future__ import annotations

from typing import Literal

from pydantic import Field, NonNegativeFloat, NonNegativeInt, PositiveFloat, PositiveInt, field_validator

from kdcore.config.base import NAME
from kdcore.schema import Section


class LifelongGate(Section):
    """When an update is promoted (flows/update.py): checked on the accuracy matrix after it."""

    max_drop: NonNegativeFloat = Field(
        default=0.05, le=1.0, description="Accuracy on each earlier increment may fall at most this much."
    )
    min_newest: NonNegativeFloat = Field(default=0.8, le=1.0, description="The newest increment's test accuracy.")


class LifelongConfig(Section):
    """Updates of the distilled student as new increments of data arrive (kdcore/lifelong/, the update stage)."""

    scenario: Literal["batch", "domain", "class", "task"] = Field(
        default="domain",
        description="batch: more data of known classes | domain: drifted inputs | class: new classes | "
        "task: new classes, the increment known at test time.",
    )
    method: str = Field(
        default="lwf_replay",
        description="A name in kdcore.lifelong.methods.UPDATES: "
        "finetune | lwf | replay | lwf_replay | teacher | joint.",
    )
    increments: list[str] = Field(
        default_factory=list, description="Accepted increments in the order learned: names under paths.increments."
    )
    memory: NonNegativeInt = Field(default=500, description="Exemplar memory budget (replay methods).")
    selection: Literal["reservoir", "herding"] = Field(default="herding", description="How exemplars are chosen.")
    steps: PositiveInt = Field(default=1000, description="Optimisation steps per increment.")
    batch_size: PositiveInt = Field(default=64, description="New samples per step.")
    replay_batch_size: PositiveInt = Field(default=64, description="Exemplars per step (replay methods).")
    lr: PositiveFloat = Field(default=1e-3, description="Learning rate, constant over an update.")
    optimizer: Literal["adam", "adamw", "sgd"] = Field(default="adam", description="The update's optimiser.")
    weight_decay: NonNegativeFloat = Field(default=0.0, description="Weight decay of the optimiser.")
    temperature: PositiveFloat = Field(default=2.0, description="Of the LwF and teacher KD terms.")
    lwf_weight: NonNegativeFloat = Field(default=1.0, description="Weight of KD from the previous student.")
    teacher_weight: NonNegativeFloat = Field(default=1.0, description="Weight of KD from the teacher (teacher).")
    teacher_steps: PositiveInt = Field(default=500, description="The teacher's own update steps per increment.")
    asymmetric_ce: bool = Field(
        default=False,
        description="Class scenario: the new samples' cross-entropy over the increment's own classes, the "
        "replayed samples' over all seen classes (ER-ACE, Caccia et al. 2022).",
    )
    test_share: float = Field(
        default=0.2, gt=0.0, lt=1.0, description="Share of each accepted increment held out as its test data."
    )
    gate: LifelongGate = LifelongGate()

    @field_validator("method")
    @classmethod
    def _known_method(cls, name: str) -> str:
        from kdcore.lifelong.methods import UPDATES

        UPDATES.get(name)  # an unknown name lists the registered ones
        return name

    @field_validator("increments")
    @classmethod
    def _increment_names(cls, names: list[str]) -> list[str]:
        for name in names:
            if not NAME.fullmatch(name):
                raise ValueError(f"increment name {name!r} must be letters, digits, '_' or '-'")
        if len(set(names)) != len(names):
            raise ValueError(f"an increment is listed twice: {names}")
        return names
