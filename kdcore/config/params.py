"""Params: the whole of params.yaml, each section validated by its own model."""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import Field, NonNegativeFloat, NonNegativeInt, PositiveInt, field_validator, model_validator

from kdcore.config.base import NAME
from kdcore.config.data import DataConfig
from kdcore.config.deploy import EvaluateConfig, ExportConfig, GateConfig, QuantizeConfig
from kdcore.config.distill import FEATURE_TERMS, DistillConfig
from kdcore.config.lifelong import LifelongConfig
from kdcore.config.models import StudentConfig, TeacherConfig
from kdcore.config.search import SearchConfig
from kdcore.config.transfer import SynthConfig, TransferConfig
from kdcore.errors import ConfigError
from kdcore.schema import FilePath, Section


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


class DistributedConfig(Section):
    """Training on several processes and machines through torchrun (kdcore/distributed.py)."""

    nproc_per_node: PositiveInt = Field(
        default=1, le=256, description="Training processes on each machine (GPUs: one per GPU); 1: no torchrun."
    )
    nnodes: PositiveInt = Field(default=1, le=4096, description="Machines; each runs the same stage command.")
    master_addr: str = Field(
        default="127.0.0.1", min_length=1, description="nnodes > 1: the address of the machine of rank 0."
    )
    master_port: int = Field(default=29500, ge=1024, le=65535, description="nnodes > 1: rank 0's port.")

    @property
    def processes(self) -> int:
        return self.nproc_per_node * self.nnodes


class GpuConfig(Section):
    """Faster training and inference on GPUs (kdcore/runtime.py Accel); on the CPU, auto leaves everything off."""

    amp: Literal["auto", "off", "bf16", "fp16"] = Field(
        default="auto", description="Mixed precision: auto is bf16 on CUDA GPUs that support it, off on the CPU."
    )
    channels_last: Literal["auto", "on", "off"] = Field(
        default="auto", description="NHWC memory format for convolutions: auto is on for CUDA, off on the CPU."
    )
    compile: bool = Field(default=False, description="torch.compile the model for training (slow to start).")
    inference_mib: PositiveInt = Field(
        default=256, le=65536, description="CUDA: MiB of float32 input per forward pass of a teacher over views."
    )

    @field_validator("amp", "channels_last", mode="before")
    @classmethod
    def _yaml_switch(cls, value: object) -> object:
        """YAML reads a bare `off` / `on` as false / true: take them as the words."""
        return {False: "off", True: "on"}.get(value, value) if isinstance(value, bool) else value


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
    search: FilePath = Field(default=Path("models/search"), description="The student search's trials and choice.")


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
    distributed: DistributedConfig = DistributedConfig()
    gpu: GpuConfig = GpuConfig()
    search: SearchConfig = SearchConfig()

    @field_validator("teachers")
    @classmethod
    def _teacher_names(cls, teachers: dict[str, TeacherConfig]) -> dict[str, TeacherConfig]:
        for name in teachers:
            if not NAME.fullmatch(name):
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

    @model_validator(mode="after")
    def _graph_settings(self) -> Params:
        """On graph data the models are GNNs or MLPs on node features, and the objective is CE on the labelled
        nodes and KD on the transfer nodes: what has no meaning for nodes is refused here, before any stage."""
        if not self.data.is_graph:
            return self
        from kdcore.config.models import GNN_MODELS

        allowed = (*GNN_MODELS, "mlp")
        for name, teacher in self.teachers.items():
            if teacher.origin == "onnx":
                raise ValueError(f"teachers.{name}.onnx: on graph data a teacher is one of {', '.join(allowed)}")
            if teacher.model.name not in allowed:
                raise ValueError(f"teachers.{name}.model: {teacher.model.name} takes images; on graph data a model is "
                                 f"one of {', '.join(allowed)}")  # fmt: skip
        if self.student.model.name not in allowed:
            raise ValueError(f"student.model: {self.student.model.name} takes images; on graph data a model is one of "
                             f"{', '.join(allowed)}")  # fmt: skip
        other = sorted({t.name for t in self.distill.terms} - {"ce", "kd"})
        if other:
            raise ValueError(f"distill.terms: {', '.join(other)} not for graph data (nodes have no views or feature "
                             "maps here); use ce (labelled nodes) and kd (transfer nodes)")  # fmt: skip
        if self.transfer.source != "real":
            raise ValueError("transfer.source: graph data distils on the graph's own nodes; set it to real")
        if self.search.trials:
            raise ValueError("search.trials: the student search runs on image and vector data; set it to 0")
        if self.distill.generations > 1:
            raise ValueError("distill.generations: born-again generations run on image and vector data; set it to 1")
        fanouts = self.data.graph.fanouts
        models = [(f"teachers.{n}.model", t.model) for n, t in self.teachers.items()]
        models.append(("student.model", self.student.model))
        for key, spec in models:
            if fanouts and spec.name in GNN_MODELS and spec.layers != len(fanouts):
                raise ValueError(f"data.graph.fanouts: {len(fanouts)} given, but {key} ({spec.name}) has {spec.layers} "
                                 "layers; give one fanout per layer")  # fmt: skip
        return self

    def synth_teacher(self) -> str:
        """The teacher the synthetic data is made from."""
        return self.synth.teacher or next(iter(self.teachers))

    def check_for_kind(self, kind: str) -> None:
        """Vectors have no pixels: shifts and cutmix would move or cut features, so they must be off."""
        if kind != "vector":
            return
        wrong = [
            f"teachers.{name}.train.shift" for name, t in self.teachers.items() if t.train is not None and t.train.shift
        ]
        if self.transfer.shift and self.transfer.views > 1:
            wrong.append("transfer.shift")
        if self.transfer.mix in ("cutmix", "both"):
            wrong.append("transfer.mix (cutmix)")
        if self.transfer.augment == "crop":
            wrong.append("transfer.augment (crop)")
        if wrong:
            raise ConfigError(
                f"data.path {self.data.path} holds (N, D) vectors, which have no pixels to shift or cut: "
                f"set {', '.join(wrong)} to 0 / none / shift (mixup views work for vectors)"
            )

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
