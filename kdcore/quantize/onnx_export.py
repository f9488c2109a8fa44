"""ONNX files of a model, fp32 and int8, and their logits in onnxruntime.

int8 is onnxruntime's static quantization in QDQ form (QuantizeLinear / DequantizeLinear pairs around
each quantized operator): weights int8 per output channel, activations uint8 with ranges calibrated
(min / max) on real inputs. `reduce_range` keeps the weights to 7 bits: on CPUs without VNNI the
u8 x s8 products of full-range values can saturate in the int16 accumulation of AVX2 kernels.
"""

from __future__ import annotations

import warnings
from pathlib import Path

import torch
from torch import nn

from kdcore.artifacts import save_with
from kdcore.errors import DataError

INPUT, OUTPUT = "x", "logits"


def strip_debug_info(path: Path) -> None:
    """Removes the exporter's per-node debug records (stack traces with absolute source paths, FX
    node dumps) and doc strings, so the file's bytes do not depend on where the code lives."""
    import onnx

    model = onnx.load(str(path))
    graphs = [model.graph, *[f for f in model.functions]]
    for graph in graphs:
        for node in graph.node:
            del node.metadata_props[:]
            node.doc_string = ""
    model.graph.doc_string = ""
    del model.metadata_props[:]
    onnx.save(model, str(path))


PREFIX = "kdflow."  # the metadata keys kdflow writes into the files it ships


def preprocessing_metadata(meta: dict) -> dict[str, str]:
    """What a deployed file needs said about its input, from the prepared data's meta.json: the model
    takes (x - mean) / std per channel of raw samples x in `input_range` (pixels in [0, 1]; for (N, D)
    vectors, the range of the teacher's split), shaped (N, C, H, W) (vectors: (N, D, 1, 1))."""
    import json

    mean, std = meta["mean"], meta["std"]
    if meta.get("kind", "image") == "vector":
        low = [b * s + m for b, s, m in zip(meta["bounds"]["low"], std, mean, strict=True)]
        high = [b * s + m for b, s, m in zip(meta["bounds"]["high"], std, mean, strict=True)]
        layout = "(N, D, 1, 1) feature vectors"
    else:
        low, high = [0.0] * len(mean), [1.0] * len(mean)
        layout = "(N, C, H, W) images, pixels scaled to [0, 1]"
    return {
        f"{PREFIX}input": f"{layout}; feed (x - {PREFIX}mean) / {PREFIX}std, per channel",
        f"{PREFIX}input_shape": json.dumps(meta["input_shape"]),
        f"{PREFIX}mean": json.dumps(mean),
        f"{PREFIX}std": json.dumps(std),
        f"{PREFIX}input_range": json.dumps([low, high]),
        f"{PREFIX}class_names": json.dumps(meta["class_names"]),
    }


def stamp_metadata(path: Path, metadata: dict[str, str]) -> None:
    """Writes `metadata` into the ONNX file's metadata_props (sorted, replacing kdflow's earlier keys),
    atomically: onnxruntime reads it as `InferenceSession(path).get_modelmeta().custom_metadata_map`."""
    import onnx

    model = onnx.load(str(path))
    kept = [(p.key, p.value) for p in model.metadata_props if not p.key.startswith(PREFIX)]
    del model.metadata_props[:]
    for key, value in sorted([*kept, *metadata.items()]):
        model.metadata_props.add(key=key, value=value)
    save_with(path, lambda tmp: onnx.save(model, str(tmp)))


def dynamic_quantization_translations() -> dict:
    """ONNX forms of the per-batch quantization ops a PT2E dynamic int8 graph holds (the exporter has
    none): torch's choose_qparams (uint8, the range widened to hold 0) is ONNX's DynamicQuantizeLinear,
    and quantize / dequantize with tensor scale and zero point are QuantizeLinear / DequantizeLinear."""
    from onnxscript import opset18 as op

    float32, uint8, float64, int64 = 1, 2, 11, 7  # ONNX TensorProto types

    def choose_qparams(x, qmin: int, qmax: int, eps: float, dtype: int):
        _, scale, zero_point = op.DynamicQuantizeLinear(x)
        one = op.Constant(value_ints=[1])  # torch's outputs: shape [1], float64 and int64
        return op.Reshape(op.Cast(scale, to=float64), one), op.Reshape(op.Cast(zero_point, to=int64), one)

    def scalar(value, to: int):
        return op.Squeeze(op.Cast(value, to=to))  # [1] -> []: per-tensor scale and zero point

    def quantize(x, scale, zero_point, qmin: int, qmax: int, dtype: int):
        return op.QuantizeLinear(x, scalar(scale, float32), scalar(zero_point, uint8))

    def dequantize(x, scale, zero_point, qmin: int, qmax: int, dtype: int):
        return op.DequantizeLinear(x, scalar(scale, float32), scalar(zero_point, uint8))

    ops = torch.ops.quantized_decomposed
    if not hasattr(ops, "choose_qparams"):  # registered by torchao's PT2E: without it no graph holds them
        return {}
    return {
        ops.choose_qparams.tensor: choose_qparams,
        ops.quantize_per_tensor.tensor: quantize,
        ops.dequantize_per_tensor.tensor: dequantize,
    }


def export_onnx(model: nn.Module, input_shape: tuple[int, int, int], path: Path) -> None:
    """Writes `model` as one self-contained ONNX file (weights inside) taking (batch, C, H, W)."""
    model = model.cpu()
    model.eval()  # not chained: an exported graph's eval() returns None
    example = torch.zeros(2, *input_shape)

    def write(tmp: Path) -> None:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            torch.onnx.export(
                model, (example,), str(tmp), dynamo=True, external_data=False, input_names=[INPUT],
                output_names=[OUTPUT], dynamic_shapes=({0: torch.export.Dim("batch")},), verbose=False,
                custom_translation_table=dynamic_quantization_translations(),
            )  # fmt: skip
        strip_debug_info(tmp)

    save_with(path, write)


class _Batches:
    """onnxruntime's calibration reader: the calibration images in batches of 64."""

    def __init__(self, x: torch.Tensor) -> None:
        self.items = iter([{INPUT: x[i : i + 64].numpy()} for i in range(0, len(x), 64)])

    def get_next(self) -> dict | None:
        return next(self.items, None)


def quantize_int8(fp32: Path, out: Path, calibration: torch.Tensor, per_channel: bool, reduce_range: bool) -> None:
    """Static int8 QDQ model of the ONNX file `fp32`, calibrated on `calibration` (N, C, H, W)."""
    from onnxruntime.quantization import CalibrationDataReader, QuantFormat, QuantType, quantize_static
    from onnxruntime.quantization.shape_inference import quant_pre_process

    if len(calibration) == 0:
        raise DataError("export: no calibration images (the transfer set is empty)")
    reader = type("Reader", (_Batches, CalibrationDataReader), {})(calibration)

    def write(tmp: Path) -> None:
        prepared = tmp.with_name(tmp.name + ".pre.onnx")
        try:
            quant_pre_process(str(fp32), str(prepared))
            quantize_static(
                str(prepared), str(tmp), reader, quant_format=QuantFormat.QDQ, per_channel=per_channel,
                activation_type=QuantType.QUInt8, weight_type=QuantType.QInt8, reduce_range=reduce_range,
            )  # fmt: skip
        finally:
            prepared.unlink(missing_ok=True)

    save_with(out, write)
