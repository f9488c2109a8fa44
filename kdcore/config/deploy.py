"""What happens after distillation: evaluation, the quality gate, export and quantization."""

from __future__ import annotations

from typing import Literal

from pydantic import Field, NonNegativeInt, PositiveFloat, PositiveInt

from kdcore.schema import Section


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
