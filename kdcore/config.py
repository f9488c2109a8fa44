"""Pydantic models of params.yaml. Loaded once, at the edge; library functions take plain arguments.

Every model is frozen, rejects unknown keys and takes values strictly (`epochs: yes` or `lr: "0.1"` is an
error, not 1 or 0.1), and the YAML reader rejects a key written twice, so a typo fails before any work starts.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Annotated, Any, Literal, get_args, get_origin

import yaml
from pydantic import (
    BaseModel,
    ConfigDict,
    Discriminator,
    Field,
    NonNegativeFloat,
    NonNegativeInt,
    PositiveFloat,
    PositiveInt,
    Strict,
    Tag,
    ValidationError,
    field_validator,
    model_validator,
)

from kdcore.errors import ConfigError

DATA_SOURCES = ("mnist5k", "digits", "imagefolder", "idx", "npz")
BUILTIN_MODELS = ("mlp", "cnn")
TEACHER_NAME = re.compile(r"[A-Za-z0-9_-]+")


class Section(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid", strict=True)


# a path is written as a string in YAML: the one lax conversion
FilePath = Annotated[Path, Strict(False)]


# --- models -------------------------------------------------------------------------------------


class MLPSpec(Section):
    """A fully connected network on flattened pixels."""

    name: Literal["mlp"]
    hidden: list[PositiveInt] = Field(default=[128], description="Widths of the hidden layers.")
    dropout: float = Field(default=0.0, ge=0.0, lt=1.0, description="Dropout after each hidden layer.")


class CNNSpec(Section):
    """A small VGG-style convnet: conv blocks (3x3, optional BatchNorm, ReLU, 2x2 max-pool), then a head."""

    name: Literal["cnn"]
    channels: list[PositiveInt] = Field(default=[32, 64], min_length=1, description="Channels per conv block.")
    hidden: PositiveInt = Field(default=128, description="Width of the fully connected layer before the logits.")
    batchnorm: bool = Field(default=True, description="BatchNorm after each convolution.")
    dropout: float = Field(default=0.0, ge=0.0, lt=1.0, description="Dropout before the logits.")


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
                f"unknown model {name!r}; known: {', '.join(BUILTIN_MODELS)} "
                f"or a torchvision classifier ({', '.join(known[:6])}, ...)"
            )
        return name


def _model_tag(value: Any) -> str:
    name = value.get("name") if isinstance(value, dict) else getattr(value, "name", None)
    return name if name in BUILTIN_MODELS else "torchvision"


ModelSpec = Annotated[
    Annotated[MLPSpec, Tag("mlp")] | Annotated[CNNSpec, Tag("cnn")] | Annotated[TorchvisionSpec, Tag("torchvision")],
    Discriminator(_model_tag),
]


# --- training -----------------------------------------------------------------------------------


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


# --- data ---------------------------------------------------------------------------------------


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
    source: Literal[DATA_SOURCES] = Field(description="Where samples come from.")  # type: ignore[valid-type]
    path: FilePath | None = Field(default=None, description="File or directory for imagefolder, idx and npz.")
    image_size: PositiveInt | None = Field(default=None, description="imagefolder: resize to this square size.")
    channels: Literal[1, 3] = Field(default=1, description="imagefolder: 1 (grayscale) or 3 (RGB).")
    splits: SplitSizes
    validation: DataValidationConfig = DataValidationConfig()

    @model_validator(mode="after")
    def _path_when_needed(self) -> DataConfig:
        needs_path = self.source in ("imagefolder", "idx", "npz")
        if needs_path and self.path is None:
            raise ValueError(f"data.path is required for data.source={self.source!r}")
        if not needs_path and self.path is not None:
            raise ValueError(f"data.path must be null for data.source={self.source!r} (bundled data)")
        return self


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

    method: Literal["noise", "inversion", "generator"] = Field(
        default="inversion", description="noise | inversion (DeepInversion) | generator (DAFL)."
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

    @model_validator(mode="after")
    def _whole_batches(self) -> SynthConfig:
        if self.images % self.batch_size:
            raise ValueError(f"synth.images ({self.images}) must be a multiple of synth.batch_size ({self.batch_size})")
        return self


class Term(Section):
    weight: NonNegativeFloat = Field(default=1.0, description="Multiplies this term in the sum.")


class CETerm(Term):
    """Cross-entropy with the hard labels, where the sample has one."""

    name: Literal["ce"]


class KDTerm(Term):
    """Hinton et al. 2015: T^2 * KL(teacher || student) at distill.temperature."""

    name: Literal["kd"]


class DKDTerm(Term):
    """Zhao et al. 2022: alpha * TCKD + beta * NCKD at distill.temperature."""

    name: Literal["dkd"]
    alpha: NonNegativeFloat = 1.0
    beta: NonNegativeFloat = 8.0


class FeatureTerm(Term):
    """A loss on intermediate features: module paths of the student's and the teacher's layers, paired."""

    student_layers: list[str] = Field(min_length=1, description="Module paths in the student, e.g. features.2.")
    teacher_layers: list[str] = Field(min_length=1, description="Module paths in the teacher, one per student layer.")
    teacher: str | None = Field(default=None, description="Which teacher's features (default: the first listed).")

    @model_validator(mode="after")
    def _paired(self) -> FeatureTerm:
        if len(self.student_layers) != len(self.teacher_layers):
            raise ValueError(
                f"student_layers ({len(self.student_layers)}) and teacher_layers ({len(self.teacher_layers)}) "
                "must pair up one to one"
            )
        return self


class HintTerm(FeatureTerm):
    """FitNets (Romero et al. 2015) through a learned regressor."""

    name: Literal["hint"]


class AttentionTerm(FeatureTerm):
    """Attention transfer (Zagoruyko & Komodakis 2017) on conv feature maps."""

    name: Literal["attention"]
    p: PositiveFloat = 2.0


class RelationalTerm(FeatureTerm):
    """Relational KD (Park et al. 2019): distances and angles within the batch."""

    name: Literal["relational"]
    distance_weight: NonNegativeFloat = 25.0
    angle_weight: NonNegativeFloat = 50.0


LossTerm = Annotated[CETerm | KDTerm | DKDTerm | HintTerm | AttentionTerm | RelationalTerm, Field(discriminator="name")]
FEATURE_TERMS = ("hint", "attention", "relational")


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

    @model_validator(mode="after")
    def _generations_without_features(self) -> DistillConfig:
        features = [t.name for t in self.terms if t.name in FEATURE_TERMS]
        if self.generations > 1 and features:
            raise ValueError(f"feature terms ({', '.join(features)}) name teacher layers, so they need generations=1")
        return self


class EvaluateConfig(Section):
    ece_bins: PositiveInt = Field(default=15, le=100)
    latency_repeats: PositiveInt = Field(
        default=30, description="Timed repeats per batch size; the median is reported."
    )
    latency_threads: PositiveInt = Field(default=1, description="CPU threads while timing latency.")


class GateConfig(Section):
    """The quality gate the orchestrated pipeline applies before it commits results."""

    min_accuracy: float = Field(default=0.9, ge=0.0, le=1.0, description="Floor for the distilled student's accuracy.")
    max_drop: float = Field(default=0.02, ge=0.0, le=1.0, description="Largest drop against the last commit.")


class ExportConfig(Section):
    """ONNX files of the students, fp32 and int8, evaluated in onnxruntime (the export stage)."""

    models: list[Literal["student_kd", "student_scratch"]] = Field(
        default_factory=lambda: ["student_kd"], description="Which models to export."
    )
    int8: bool = Field(default=True, description="Also write the int8 QDQ model (onnxruntime static quantization).")
    calibration_samples: PositiveInt = Field(default=512, description="Transfer images that calibrate int8 ranges.")
    per_channel: bool = Field(default=True, description="int8 weights with one scale per output channel.")
    reduce_range: bool = Field(
        default=True, description="7-bit weights: avoids int16 saturation in AVX2 kernels on CPUs without VNNI."
    )


class LowBitConfig(Section):
    """Low-bit weights of the Linear layers (torchao), stored packed."""

    bits: int = Field(default=4, ge=2, le=7, description="Bits per weight.")
    group: NonNegativeInt = Field(
        default=0, description="Weights sharing one scale along a row; 0: one scale per output row."
    )


class QATSettings(Section):
    """Quantization-aware training: the fake-quantized student fine-tuned on the transfer views."""

    targets: Literal["kd", "labels"] = Field(
        default="kd",
        description="kd: distill.terms' logit terms against the cached teacher logits | labels: cross-entropy "
        "on the views' labels only (the baseline QAT with KD is compared with).",
    )
    epochs: PositiveInt = Field(default=2, description="Passes over the transfer views.")
    batch_size: PositiveInt = 128
    lr: PositiveFloat = Field(default=1e-4, description="Peak learning rate (Adam, cosine).")


class QuantizeConfig(Section):
    """Quantized students (the quantize stage): torchao PT2E int8 and low-bit weights, evaluated in the
    runtime that ships them."""

    models: list[Literal["student_kd", "student_scratch"]] = Field(
        default_factory=lambda: ["student_kd"], description="Which models to quantize."
    )
    int8: bool = Field(default=True, description="Static int8 PTQ (PT2E, X86InductorQuantizer), shipped as ONNX QDQ.")
    int8_qat: bool = Field(default=True, description="int8 quantization-aware training (qat settings).")
    dynamic_int8: bool = Field(default=False, description="Dynamic int8 PTQ of the Linear layers (MLP students).")
    low_bit: LowBitConfig | None = Field(default_factory=LowBitConfig, description="Low-bit weights; null: none.")
    low_bit_qat: bool = Field(default=True, description="Low-bit quantization-aware training (qat settings).")
    qat: QATSettings = QATSettings()
    calibration_samples: PositiveInt = Field(default=512, description="Transfer images that calibrate int8 ranges.")


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
    method: Literal["finetune", "lwf", "replay", "lwf_replay", "teacher", "joint"] = Field(
        default="lwf_replay", description="The update method (kdcore.lifelong.methods.UPDATES)."
    )
    increments: list[str] = Field(
        default_factory=list, description="Accepted increments in the order learned: names under paths.increments."
    )
    memory: NonNegativeInt = Field(default=500, description="Exemplar memory budget (replay methods).")
    selection: Literal["reservoir", "herding"] = Field(default="herding", description="How exemplars are chosen.")
    steps: PositiveInt = Field(default=1000, description="Optimisation steps per increment.")
    batch_size: PositiveInt = Field(default=64, description="New samples per step.")
    replay_batch_size: PositiveInt = Field(default=64, description="Exemplars per step (replay methods).")
    lr: PositiveFloat = Field(default=1e-3, description="Adam learning rate.")
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

    @field_validator("increments")
    @classmethod
    def _increment_names(cls, names: list[str]) -> list[str]:
        for name in names:
            if not TEACHER_NAME.fullmatch(name):
                raise ValueError(f"increment name {name!r} must be letters, digits, '_' or '-'")
        if len(set(names)) != len(names):
            raise ValueError(f"an increment is listed twice: {names}")
        return names


class OrchestrationConfig(Section):
    """How Prefect runs the DVC stages."""

    retries: NonNegativeInt = Field(default=1, le=10, description="Retries of a failing stage.")
    retry_delay_s: NonNegativeFloat = Field(default=5.0, le=3600, description="Seconds between retries.")
    parallel: PositiveInt = Field(
        default=1, le=64, description="Stages run at once (independent ones only, e.g. the teachers)."
    )
    task_runner: Literal["thread", "dask", "auto"] = Field(
        default="auto", description="Prefect task runner: thread pool, Dask, or Dask when installed (auto)."
    )
    push: bool = Field(
        default=True, description="`dvc push` the run's models and data to the DVC remote after the commit."
    )


class Paths(Section):
    prepared: FilePath = Path("data/prepared")
    teachers: FilePath = Field(default=Path("models/teachers"), description="One directory per teacher, by name.")
    transfer: FilePath = Path("data/transfer")
    synthetic: FilePath = Field(default=Path("data/synthetic"), description="The synthesize stage's images.")
    student_kd: FilePath = Path("models/student_kd")
    student_scratch: FilePath = Path("models/student_scratch")
    metrics: FilePath = Path("metrics")
    plots: FilePath = Path("plots")
    reports: FilePath = Path("reports")
    live: FilePath = Path("dvclive")
    work: FilePath = Field(default=Path(".kdflow"), description="Resume checkpoints and the teacher-output cache.")
    landing: FilePath = Field(default=Path("data/landing"), description="Where new increments arrive (not versioned).")
    increments: FilePath = Field(default=Path("data/increments"), description="Accepted increments, one DVC-tracked "
                             "directory each.")  # fmt: skip
    updates: FilePath = Field(default=Path("models/updates"), description="The student after each accepted increment.")
    exported: FilePath = Field(default=Path("models/export"), description="ONNX files of the students (export stage).")
    quantized: FilePath = Field(default=Path("models/quantized"), description="Quantized students (quantize stage).")


class Params(Section):
    seed: NonNegativeInt = 0
    device: str = Field(default="auto", pattern=r"^(auto|cpu|cuda(:\d+)?)$")
    cpu_threads: PositiveInt = Field(
        default=2, le=256, description="Torch CPU threads per stage; fixed, since results depend on it."
    )
    paths: Paths = Paths()
    data: DataConfig
    teachers: dict[str, TeacherConfig] = Field(min_length=1, description="The teachers, by name.")
    transfer: TransferConfig = TransferConfig()
    synth: SynthConfig = SynthConfig()
    student: StudentConfig
    distill: DistillConfig = DistillConfig()
    evaluate: EvaluateConfig = EvaluateConfig()
    gate: GateConfig = GateConfig()
    lifelong: LifelongConfig = LifelongConfig()
    export: ExportConfig = ExportConfig()
    quantize: QuantizeConfig = QuantizeConfig()
    orchestration: OrchestrationConfig = OrchestrationConfig()

    @field_validator("teachers")
    @classmethod
    def _teacher_names(cls, teachers: dict[str, TeacherConfig]) -> dict[str, TeacherConfig]:
        for name in teachers:
            if not TEACHER_NAME.fullmatch(name):
                raise ValueError(f"teacher name {name!r} must be letters, digits, '_' or '-' (it names a stage)")
        return teachers

    @model_validator(mode="after")
    def _ensemble_matches_teachers(self) -> Params:
        ensemble = self.transfer.ensemble
        if ensemble.method == "weights":
            if ensemble.weights is None or len(ensemble.weights) != len(self.teachers):
                raise ValueError(
                    f"transfer.ensemble.weights needs one weight per teacher ({', '.join(self.teachers)}), "
                    f"got {ensemble.weights}"
                )
            if sum(ensemble.weights) <= 0:
                raise ValueError("transfer.ensemble.weights must not all be zero")
        for term in self.distill.terms:
            source = getattr(term, "teacher", None)
            if source is not None and source not in self.teachers:
                raise ValueError(
                    f"distill.terms: {term.name} takes features from teacher {source!r}, "
                    f"which is not in teachers ({', '.join(self.teachers)})"
                )
            if term.name in FEATURE_TERMS:
                name = source or next(iter(self.teachers))
                if self.teachers[name].origin == "onnx":
                    raise ValueError(
                        f"distill.terms: {term.name} reads layers of teacher {name!r}, an ONNX model run as a "
                        "black box (logits only); use response terms (ce, kd, dkd) or give it as pretrained weights"
                    )
        return self

    @model_validator(mode="after")
    def _synth_teacher_known(self) -> Params:
        if self.synth.teacher is not None and self.synth.teacher not in self.teachers:
            raise ValueError(f"synth.teacher {self.synth.teacher!r} is not in teachers ({', '.join(self.teachers)})")
        name = self.synth_teacher()
        if self.transfer.source != "real" and self.synth.method != "noise" and self.teachers[name].origin == "onnx":
            raise ValueError(
                f"synth.method={self.synth.method} needs the gradients of teacher {name!r}, an ONNX model run as a "
                "black box (logits only); use synth.method: noise or give the teacher as pretrained weights"
            )
        return self

    def synth_teacher(self) -> str:
        """The teacher the synthetic data is made from."""
        return self.synth.teacher or next(iter(self.teachers))

    def teacher_seed(self, name: str) -> int:
        """The seed a teacher trains with: the global seed plus its own."""
        return self.seed + self.teachers[name].seed

    @model_validator(mode="after")
    def _scratch_has_labels(self) -> Params:
        if not self.transfer.labeled and not self.transfer.include_teacher_train:
            raise ValueError(
                "transfer.labeled=false needs transfer.include_teacher_train=true: "
                "otherwise the scratch student has no labeled data"
            )
        return self


# --- loading ------------------------------------------------------------------------------------


TERM_NAMES = ("ce", "kd", "dkd", *FEATURE_TERMS)
_UNION_TAGS = {
    "mlp": MLPSpec,
    "cnn": CNNSpec,
    "torchvision": TorchvisionSpec,
    **{
        cls.model_fields["name"].annotation.__args__[0]: cls
        for cls in (CETerm, KDTerm, DKDTerm, HintTerm, AttentionTerm, RelationalTerm)
    },
}


def _is_tag(loc: tuple[Any, ...], i: int) -> bool:
    """Discriminated-union tags in an error location are not keys the user wrote."""
    return i > 0 and (loc[i - 1] == "model" or isinstance(loc[i - 1], int)) and loc[i] in _UNION_TAGS


def _loc(loc: tuple[Any, ...]) -> str:
    parts = [f"[{part}]" if isinstance(part, int) else str(part) for i, part in enumerate(loc) if not _is_tag(loc, i)]
    return ".".join(parts).replace(".[", "[")


def _allowed_keys(model: type[BaseModel], loc: tuple[Any, ...]) -> list[str]:
    """The keys allowed at `loc`'s parent, for the message about an unknown key."""
    current: Any = model
    for i, part in enumerate(loc[:-1]):
        while get_origin(current) is Annotated:
            current = get_args(current)[0]
        if _is_tag(loc, i):
            current = _UNION_TAGS[part]
        elif isinstance(current, type) and issubclass(current, BaseModel) and part in current.model_fields:
            current = current.model_fields[part].annotation
        elif get_origin(current) is dict:
            current = get_args(current)[1]
        elif get_origin(current) is list and isinstance(part, int):
            current = get_args(current)[0]
        else:
            return []
    if isinstance(current, type) and issubclass(current, BaseModel):
        return list(current.model_fields)
    return []


def format_validation_error(err: ValidationError, source: str = "params.yaml") -> str:
    """One line: the key, the value, what is allowed."""
    errors = err.errors()
    # a misspelt model name makes its other keys "unknown" (to the torchvision spec): name the model first;
    # a misspelt key also makes the right one "missing": name the misspelling next
    first = next(
        (e for e in errors if e["loc"] and e["loc"][-1] == "name" and "unknown model" in e["msg"]),
        next((e for e in errors if e["type"] == "extra_forbidden"), errors[0]),
    )
    key = _loc(tuple(first["loc"])) or "(top level)"
    if first["type"] == "extra_forbidden":
        allowed = _allowed_keys(Params, tuple(first["loc"]))
        hint = f"; allowed: {', '.join(allowed)}" if allowed else ""
        return f"{source}: {key}: unknown key{hint}"
    if first["type"] == "missing":
        return f"{source}: {key}: required key is missing"
    msg = first["msg"].removeprefix("Value error, ")
    value = first.get("input")
    shown = "" if isinstance(value, dict) or value is None else f", got {value!r}"
    if isinstance(value, bool) and first["type"] in ("int_type", "float_type"):
        shown += " (YAML reads yes/no/on/off as true/false)"
    more = len(err.errors()) - 1
    tail = f" (and {more} more problem{'s' * (more > 1)})" if more else ""
    return f"{source}: {key}: {msg}{shown}{tail}"


def parse_params(raw: Any, source: str = "params.yaml") -> Params:
    if not isinstance(raw, dict):
        raise ConfigError(f"{source}: expected a mapping at the top level, got {type(raw).__name__}")
    try:
        return Params.model_validate(raw)
    except ValidationError as err:
        raise ConfigError(format_validation_error(err, source)) from None


class _ParamsLoader(yaml.SafeLoader):
    """PyYAML's safe loader with two changes: a key written twice in one mapping is an error (DVC
    rejects such a file too), and `1e-3` is a float as in YAML 1.2 (PyYAML's YAML 1.1 reads it as a
    string, which strict validation would then refuse)."""

    def construct_mapping(self, node: yaml.MappingNode, deep: bool = False) -> dict[Any, Any]:
        seen: dict[Any, int] = {}
        for key_node, _ in node.value:
            key = self.construct_object(key_node, deep=True)
            line = key_node.start_mark.line + 1
            if key in seen:
                raise yaml.constructor.ConstructorError(
                    None, None, f"key {key!r} written twice (lines {seen[key]} and {line})", key_node.start_mark
                )
            seen[key] = line
        return super().construct_mapping(node, deep=deep)


_ParamsLoader.add_implicit_resolver(
    "tag:yaml.org,2002:float",
    re.compile(r"^[-+]?(?:[0-9][0-9_]*)(?:\.[0-9_]*)?[eE][-+]?[0-9]+$"),
    list("-+0123456789"),
)


def read_yaml(text: str, source: str = "params.yaml") -> Any:
    """Parses YAML as params files are read everywhere; ConfigError naming the file and line otherwise."""
    try:
        return yaml.load(text, Loader=_ParamsLoader)  # noqa: S506 - a SafeLoader subclass
    except yaml.YAMLError as err:
        mark = getattr(err, "problem_mark", None)
        where = f" line {mark.line + 1}" if mark else ""
        raise ConfigError(f"{source}:{where}: not valid YAML ({getattr(err, 'problem', err)})") from None


def load_params(path: str | Path = "params.yaml") -> Params:
    """Reads and validates params.yaml; raises ConfigError with one line naming the key."""
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"{path}: no such file")
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as err:
        raise ConfigError(f"{path}: unreadable ({err})") from None
    return parse_params(read_yaml(text, source=str(path)), source=str(path))
