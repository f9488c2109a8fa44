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


GRAPH_SOURCES = ("planetoid", "graph_npz")


class GraphDataConfig(Section):
    """Node classification on a graph (data.source planetoid or graph_npz): its split and setting."""

    split: Literal["public", "random"] = Field(
        default="public", description="public: the data's own masks (Cora: 20 per class, 500, 1,000); random: seeded."
    )
    train_per_class: PositiveInt = Field(default=20, description="random: labelled training nodes of each class.")
    validation: PositiveInt = Field(default=500, description="random: validation nodes.")
    test: PositiveInt | None = Field(default=1000, description="random: test nodes (null: every node left).")
    setting: Literal["transductive", "inductive"] = Field(
        default="transductive",
        description="inductive: `held_out` of the test nodes and every edge touching one are kept out of training.",
    )
    held_out: float = Field(default=0.2, gt=0.0, lt=1.0, description="inductive: the share of test nodes held out.")
    normalize_features: bool = Field(default=True, description="Scale each node's features to sum to one.")
    patience: PositiveInt = Field(
        default=50, description="Training keeps the epoch of best validation accuracy and stops this many after it."
    )
    fanouts: list[PositiveInt] | None = Field(
        default=None,
        description="GNN training: null runs the whole graph each step; a list (one per layer, e.g. [10, 10]) trains "
        "on mini-batches of train.batch_size nodes, each with at most that many sampled neighbours per hop "
        "(GraphSAGE), so a step's memory follows the batch, not the graph.",
    )


class DataConfig(Section):
    source: str = Field(
        description="Where samples come from: a name in kdcore.data.sources.SOURCES, or a graph: planetoid, graph_npz."
    )
    path: FilePath | None = Field(
        default=None, description="File or directory for imagefolder, idx, npz, graph_npz; planetoid: the root."
    )
    name: str | None = Field(default=None, description="planetoid: the dataset, e.g. Cora, CiteSeer, PubMed.")
    image_size: PositiveInt | None = Field(default=None, description="imagefolder: resize to this square size.")
    channels: Literal[1, 3] = Field(default=1, description="imagefolder: 1 (grayscale) or 3 (RGB).")
    splits: SplitSizes | None = Field(default=None, description="Split sizes of image and vector data (not graphs).")
    graph: GraphDataConfig = GraphDataConfig()
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

    @property
    def is_graph(self) -> bool:
        return self.source in GRAPH_SOURCES

    @field_validator("source")
    @classmethod
    def _known_source(cls, name: str) -> str:
        from kdcore.data.sources import SOURCES

        if name in GRAPH_SOURCES:
            return name
        if name not in SOURCES:
            known = ", ".join(sorted(SOURCES.names() + list(GRAPH_SOURCES)))
            raise ValueError(f"unknown data source {name!r}; known: {known}")
        return name

    @model_validator(mode="after")
    def _graph_or_images(self) -> DataConfig:
        if self.is_graph:
            if self.path is None:
                raise ValueError(f"data.path is required for data.source={self.source!r}")
            if self.source == "planetoid" and not self.name:
                raise ValueError("data.name is required for data.source=planetoid (e.g. Cora)")
            if self.source == "graph_npz" and self.name:
                raise ValueError("data.name is for planetoid; a graph_npz file is named by data.path")
            extra = [k for k in ("splits", "image_size") if getattr(self, k) is not None]
            if self.published_test:
                extra.append("published_test")
            if extra:
                raise ValueError(f"{', '.join(f'data.{k}' for k in extra)}: not for graphs (use data.graph)")
            return self
        if self.splits is None:
            raise ValueError(f"data.splits is required for data.source={self.source!r}")
        if self.name is not None:
            raise ValueError("data.name is for data.source=planetoid")
        return self

    @model_validator(mode="after")
    def _path_when_needed(self) -> DataConfig:
        from kdcore.data.sources import reads_a_path

        if self.is_graph:
            return self
        needs_path = reads_a_path(self.source)
        if needs_path and self.path is None:
            raise ValueError(f"data.path is required for data.source={self.source!r}")
        if not needs_path and self.path is not None:
            raise ValueError(f"data.path must be null for data.source={self.source!r} (bundled data)")
        return self
