"""Architectures (model specs) and training settings: the teachers' and the student's sections."""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import (
    Discriminator,
    Field,
    NonNegativeFloat,
    NonNegativeInt,
    PositiveFloat,
    PositiveInt,
    Tag,
    field_validator,
    model_validator,
)

from kdcore.schema import FilePath, Section

BUILTIN_MODELS = ("mlp", "cnn")
GNN_MODELS = ("gcn", "sage", "gat")


class MLPSpec(Section):
    """A fully connected network on flattened pixels."""

    name: Literal["mlp"]
    hidden: list[PositiveInt] = Field(default=[128], description="Widths of the hidden layers.")
    dropout: float = Field(default=0.0, ge=0.0, lt=1.0, description="Dropout after each hidden layer.")


class CNNSpec(Section):
    """A small VGG-style convnet: conv blocks (k x k, optional BatchNorm, ReLU, 2x2 max-pool), then a head."""

    name: Literal["cnn"]
    channels: list[PositiveInt] = Field(default=[32, 64], min_length=1, description="Channels per conv block.")
    hidden: PositiveInt = Field(default=128, description="Width of the fully connected layer before the logits.")
    kernel: Literal[1, 3, 5, 7] = Field(default=3, description="Convolution kernel size (padded to keep the map size).")
    batchnorm: bool = Field(default=True, description="BatchNorm after each convolution.")
    dropout: float = Field(default=0.0, ge=0.0, lt=1.0, description="Dropout before the logits.")


class GNNSpec(Section):
    """A graph neural network on node features and edges (PyTorch Geometric), for graph data: GCN (Kipf and
    Welling 2017), GraphSAGE with mean aggregation (Hamilton et al. 2017), GAT (Velickovic et al. 2018)."""

    name: Literal["gcn", "sage", "gat"]
    hidden: PositiveInt = Field(default=64, description="Width of each hidden layer (per head for gat).")
    layers: PositiveInt = Field(default=2, le=8, description="Graph convolutions, the last one gives the logits.")
    dropout: float = Field(default=0.5, ge=0.0, lt=1.0, description="Dropout on each layer's input.")
    heads: PositiveInt = Field(default=8, le=16, description="gat: attention heads of the hidden layers.")
    norm: Literal["none", "batch", "layer"] = Field(default="none", description="Normalisation after hidden layers.")


class TorchvisionSpec(Section):
    """Any torchvision classifier by name, adapted to the input channels and number of classes."""

    name: str
    weights: FilePath | None = Field(default=None, description="A safetensors state dict to load; none: random init.")

    @field_validator("name")
    @classmethod
    def _known_torchvision(cls, name: str) -> str:
        from kdcore.models import torchvision_names

        known = torchvision_names()
        if name not in known:
            raise ValueError(
                f"unknown model {name!r}; known: {', '.join(BUILTIN_MODELS + GNN_MODELS)} "
                f"or a torchvision classifier ({', '.join(known[:6])}, ...)"
            )
        return name


def _model_tag(value: Any) -> str:
    name = value.get("name") if isinstance(value, dict) else getattr(value, "name", None)
    return name if name in BUILTIN_MODELS else "gnn" if name in GNN_MODELS else "torchvision"


ModelSpec = Annotated[
    Annotated[MLPSpec, Tag("mlp")]
    | Annotated[CNNSpec, Tag("cnn")]
    | Annotated[GNNSpec, Tag("gnn")]
    | Annotated[TorchvisionSpec, Tag("torchvision")],
    Discriminator(_model_tag),
]


class TrainConfig(Section):
    """Optimisation settings shared by every training run."""

    epochs: PositiveInt = Field(description="Passes over the training set.")
    batch_size: PositiveInt = 64
    lr: PositiveFloat = Field(default=1e-3, description="Peak learning rate.")
    weight_decay: NonNegativeFloat = 0.0
    optimizer: Literal["adam", "adamw", "sgd"] = "adam"
    momentum: float = Field(default=0.9, ge=0.0, lt=1.0, description="SGD momentum (sgd only).")
    schedule: Literal["constant", "cosine"] = Field(default="cosine", description="Learning-rate schedule per step.")


class TeacherTrainConfig(TrainConfig):
    shift: NonNegativeInt = Field(default=0, le=8, description="Random shifts of up to this many pixels, online.")


class TeacherConfig(Section):
    """One teacher of the ensemble. `train_teacher@<name>` trains it (model + train), or takes a teacher
    trained elsewhere as it is: `pretrained` weights for `model`, or an `onnx` model (a black box)."""

    model: ModelSpec | None = Field(default=None, description="The architecture (not with onnx).")
    train: TeacherTrainConfig | None = Field(default=None, description="How to train it (not with pretrained/onnx).")
    pretrained: FilePath | None = Field(
        default=None, description="Trained elsewhere: a safetensors state dict for `model`, used as it is."
    )
    onnx: FilePath | None = Field(
        default=None, description="Trained elsewhere: an ONNX classifier run by onnxruntime (logits only)."
    )
    seed: NonNegativeInt = Field(
        default=0, description="This teacher's own seed, added to the global seed (init, sample order, subset)."
    )
    subset: float = Field(
        default=1.0, gt=0.0, le=1.0, description="Train on this fraction of the teacher split, drawn by the seed."
    )

    @property
    def origin(self) -> Literal["train", "pretrained", "onnx"]:
        return "onnx" if self.onnx is not None else "pretrained" if self.pretrained is not None else "train"

    @model_validator(mode="after")
    def _one_origin(self) -> TeacherConfig:
        if self.onnx is not None:
            extra = [k for k in ("model", "train", "pretrained") if getattr(self, k) is not None]
            if extra:
                raise ValueError(f"an onnx teacher is used as it is: remove {', '.join(extra)}")
        elif self.pretrained is not None:
            if self.model is None:
                raise ValueError("pretrained needs `model`, the architecture the weights belong to")
            if self.train is not None:
                raise ValueError("a pretrained teacher is used as it is, not trained: remove `train`")
        elif self.model is None or self.train is None:
            raise ValueError("a teacher needs `model` and `train`, or `pretrained` weights (with `model`), or `onnx`")
        return self


class StudentConfig(Section):
    """The student, and the budget that both the distilled and the scratch student get."""

    model: ModelSpec
    train: TrainConfig
