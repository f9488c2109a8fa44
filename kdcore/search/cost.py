"""What a student costs where it ships, measured before it trains: its ONNX file (int8 QDQ when the search
measures int8) in onnxruntime on one thread, at batch 1 and 256, its size on disk and its parameters.

A student of an architecture is measured before it trains, with generic values in every weight and buffer
(seeded, in [0.5, 1)): a fresh model's are not generic (BatchNorm's ones and zeros, zero biases), and the
exporter stores identical constants once, so its file came out ~3% smaller than the trained student's
(34,984 against 36,041 bytes for the CNN 8-16 h32 in int8); with generic values it is the trained size to the
byte. Latency does not depend on the values. So an over-budget architecture is known before any epoch is
spent on it.

Latency is the best of ROUNDS medians of `repeats` runs each: at a few hundredths of a millisecond, work on
another core (a second search worker, the training of the trial before) moves a single median by 20-30%,
and that noise only ever adds time, so the lowest median is the steadiest figure of what the file costs."""

from __future__ import annotations

import math
import tempfile
from pathlib import Path

import torch
from torch import nn

from kdcore.evaluate.metrics import latency_ms
from kdcore.models import count_params
from kdcore.models.onnx import OnnxModel
from kdcore.quantize.onnx_export import export_onnx, quantize_int8

COST_KEYS = ("params", "size_bytes", "latency_ms", "latency_ms_b256")
ROUNDS = 5
ROUND_MS = 25.0  # the least time one round of passes takes


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
    budget=None,
) -> dict[str, float]:
    """params, size_bytes (of the file that ships), latency_ms (batch 1) and latency_ms_b256 (the best of
    ROUNDS medians of `repeats` runs on `threads` onnxruntime threads) of `model`. A student whose size or
    parameters are already over `budget` (exact figures) is timed in one round: its latency cannot make it
    feasible, and the figure is only reported."""
    model = generic_copy(model)
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
        cost = {"params": float(count_params(model)), "size_bytes": float(path.stat().st_size)}
        exact_over = budget is not None and any(
            cost[key] > limit for key, limit in limits(budget).values() if key in cost and limit is not None
        )
        rounds = 1 if exact_over else ROUNDS
        cost["latency_ms"] = steady_latency_ms(shipped, example, repeats, threads, rounds)
        cost["latency_ms_b256"] = steady_latency_ms(shipped, many, repeats, threads, rounds)
        return cost


def steady_latency_ms(model, x: torch.Tensor, repeats: int, threads: int, rounds: int = ROUNDS) -> float:
    """The lowest of `rounds` medians of at least `repeats` timed forward passes, each round at least
    ROUND_MS long: at a few hundredths of a millisecond per pass, 30 passes take under 2 ms, and one pause of
    the machine could cover every round (a CNN measured 0.081 ms once and 0.047 ms before and after)."""
    first = latency_ms(model, x, repeats, threads)
    per_round = max(repeats, math.ceil(ROUND_MS / max(first, 1e-3)))
    return min([first] + [latency_ms(model, x, per_round, threads) for _ in range(rounds)])


def generic_copy(model: nn.Module, seed: int = 0) -> nn.Module:
    """A copy of `model` whose floating weights and buffers hold seeded values in [0.5, 1) (positive, so
    BatchNorm variances stay valid): the graph and sizes of a trained model of the same architecture."""
    import copy

    generic = copy.deepcopy(model).cpu().eval()
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for tensor in generic.state_dict().values():
            if tensor.is_floating_point():
                tensor.copy_(torch.rand(tensor.shape, generator=generator) * 0.5 + 0.5)
    return generic


def violations(cost: dict[str, float], budget) -> dict[str, float]:
    """Each budget that is set, as (cost - limit) / limit (above 0: over budget, by that share), keyed by the
    budget's name: relative, so that milliseconds and bytes weigh alike when the sampler ranks infeasible
    students by their total violation."""
    return {name: (cost[key] - limit) / limit for name, (key, limit) in limits(budget).items() if limit is not None}


def limits(budget) -> dict[str, tuple[str, float | None]]:
    return {
        "max_latency_ms": ("latency_ms", budget.max_latency_ms),
        "max_latency_ms_b256": ("latency_ms_b256", budget.max_latency_ms_b256),
        "max_bytes": ("size_bytes", budget.max_bytes),
        "max_params": ("params", budget.max_params),
    }
