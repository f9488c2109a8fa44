"""Pydantic models of params.yaml, one module per group of sections. Loaded once, at the edge;
library functions take plain arguments.

Every model is frozen, rejects unknown keys and takes values strictly (`epochs: yes` or `lr: "0.1"` is an
error, not 1 or 0.1), and the YAML reader rejects a key written twice, so a typo fails before any work starts.
Names that a registry holds (data sources, synthesis and update methods, loss terms, models) are checked
against that registry, so adding one is adding its module.
"""

from kdcore.config.data import DataConfig, DataValidationConfig, SplitSizes
from kdcore.config.deploy import (
    EvaluateConfig,
    ExportConfig,
    GateConfig,
    LowBitConfig,
    QATSettings,
    QuantizeConfig,
)
from kdcore.config.distill import FEATURE_TERMS, DistillConfig, LossTerm
from kdcore.config.lifelong import LifelongConfig, LifelongGate
from kdcore.config.loading import format_validation_error, load_params, parse_params, read_yaml
from kdcore.config.models import (
    BUILTIN_MODELS,
    CNNSpec,
    MLPSpec,
    ModelSpec,
    StudentConfig,
    TeacherConfig,
    TeacherTrainConfig,
    TorchvisionSpec,
    TrainConfig,
)
from kdcore.config.params import DistributedConfig, GpuConfig, OrchestrationConfig, Params, Paths
from kdcore.config.transfer import EnsembleConfig, SynthChecks, SynthConfig, TransferConfig
from kdcore.schema import FilePath, Section

__all__ = [
    "BUILTIN_MODELS",
    "CNNSpec",
    "DataConfig",
    "DataValidationConfig",
    "DistillConfig",
    "EnsembleConfig",
    "EvaluateConfig",
    "ExportConfig",
    "FEATURE_TERMS",
    "FilePath",
    "GateConfig",
    "LifelongConfig",
    "LifelongGate",
    "LossTerm",
    "LowBitConfig",
    "MLPSpec",
    "ModelSpec",
    "OrchestrationConfig",
    "DistributedConfig",
    "GpuConfig",
    "Params",
    "Paths",
    "QATSettings",
    "QuantizeConfig",
    "Section",
    "SplitSizes",
    "StudentConfig",
    "SynthChecks",
    "SynthConfig",
    "TeacherConfig",
    "TeacherTrainConfig",
    "TorchvisionSpec",
    "TrainConfig",
    "TransferConfig",
    "format_validation_error",
    "load_params",
    "parse_params",
    "read_yaml",
]
