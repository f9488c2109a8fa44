"""The data section: where samples come from, how they are split, how they are checked."""

from __future__ import annotations

from typing import Literal

from pydantic import Field, NonNegativeInt, PositiveInt, field_validator, model_validator

from kdcore.schema import FilePath, Section


class SplitSizes(Section):
    teacher_train: PositiveInt = Field(description="Samples the teacher trains on.")
    transfer: PositiveInt = Field(description="Samples the teacher labels softly for the student.")
    test: PositiveInt = Field(description="Held-out samples every model is evaluated on.")
    validation: NonNegativeInt = Field(
        default=0, description="Held-out samples for choosing settings (searches read these, never the test split)."
    )


class DataValidationConfig(Section):
    min_class_fraction: float = Field(
        default=0.5, ge=0.0, le=1.0, description="Each class must hold at least this share of a balanced class's count."
    )


class DataConfig(Section):
    source: str = Field(description="Where samples come from: a name in kdcore.data.sources.SOURCES.")
    path: FilePath | None = Field(default=None, description="File or directory for imagefolder, idx and npz.")
    image_size: PositiveInt | None = Field(default=None, description="imagefolder: resize to this square size.")
    channels: Literal[1, 3] = Field(default=1, description="imagefolder: 1 (grayscale) or 3 (RGB).")
    splits: SplitSizes
    published_test: bool = Field(
        default=False,
        description="The test split is the source's own test set (IDX `t10k-*` files), whole: figures compare with "
        "published ones; data.splits.test must equal its size, the other splits come from the rest.",
    )
    workers: NonNegativeInt = Field(
        default=2,
        le=64,
        description="Processes that decode image files in prepare, and that read and render training batches of data "
        "read from disk (0: the stage's own process); results do not depend on it.",
    )
    validation: DataValidationConfig = DataValidationConfig()

    @field_validator("source")
    @classmethod
    def _known_source(cls, name: str) -> str:
        from kdcore.data.sources import SOURCES

        SOURCES.get(name)  # an unknown name lists the registered ones
        return name

    @model_validator(mode="after")
    def _path_when_needed(self) -> DataConfig:
        from kdcore.data.sources import reads_a_path

        needs_path = reads_a_path(self.source)
        if needs_path and self.path is None:
            raise ValueError(f"data.path is required for data.source={self.source!r}")
        if not needs_path and self.path is not None:
            raise ValueError(f"data.path must be null for data.source={self.source!r} (bundled data)")
        return self
