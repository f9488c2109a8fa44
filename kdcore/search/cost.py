"""What a student costs where it ships, measured before it trains: its ONNX file (int8 QDQ when the search
measures int8) in onnxruntime on one thread, at batch 1 and 256, its size on disk and its parameters.

An untrained student of an architecture has that architecture's graph, file size and latency: the weights'
values change neither (calibration fixes the int8 scales, not the file's layout), so an over-budget
architecture is known before any epoch is spent on it."""

from __future__ import annotations

import tempfile
from pathlib import Path

import torch
from torch import nn

from kdcore.evaluate.metrics import latency_ms
from kdcore.models import count_params
from kdcore.models.onnx import OnnxModel
from kdcore.quantize.onnx_export import export_onnx, quantize_int8

COST_KEYS = ("params", "size_bytes", "latency_ms", "latency_ms_b256")


def measure(
    model: nn.Module,
    input_shape: tuple[int, int, int],
    calibration: torch.Tensor,
    *,
    int8: bool,
    repeats: int,
    threads: int,
    per_channel: bool = True,
    reduce_range: bool = True,
) -> dict[str, float]:
    """params, size_bytes (of the file that ships), latency_ms (batch 1) and latency_ms_b256 (median of
    `repeats` runs on `threads` onnxruntime threads) of `model`."""
    example = calibration[:1]
    many = calibration[torch.arange(256) % len(calibration)]
    previous = torch.get_num_threads()
    with tempfile.TemporaryDirectory(prefix="kdflow-search-") as tmp:
        path = Path(tmp) / "model.onnx"
        export_onnx(model, input_shape, path)
        if int8:
            quantized = Path(tmp) / "model_int8.onnx"
            quantize_int8(path, quantized, calibration, per_channel, reduce_range)
            path = quantized
        torch.set_num_threads(threads)  # the session's thread count
        try:
            shipped = OnnxModel(path)
        finally:
            torch.set_num_threads(previous)
        return {
            "params": float(count_params(model)),
            "size_bytes": float(path.stat().st_size),
            "latency_ms": latency_ms(shipped, example, repeats, threads),
            "latency_ms_b256": latency_ms(shipped, many, repeats, threads),
        }


def violations(cost: dict[str, float], budget) -> dict[str, float]:
    """Each budget that is set, as cost - limit (above 0: over budget), keyed by the budget's name."""
    limits = {
        "max_latency_ms": ("latency_ms", budget.max_latency_ms),
        "max_latency_ms_b256": ("latency_ms_b256", budget.max_latency_ms_b256),
        "max_bytes": ("size_bytes", budget.max_bytes),
        "max_params": ("params", budget.max_params),
    }
    return {name: cost[key] - limit for name, (key, limit) in limits.items() if limit is not None}
