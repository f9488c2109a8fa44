"""Quality and cost of one model on the test split."""

from __future__ import annotations

import os
import statistics
import time
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn
from torchmetrics.functional.classification import multiclass_calibration_error

from kdcore.models import count_params


def quality_metrics(
    logits: torch.Tensor, y: torch.Tensor, teacher_pred: torch.Tensor, ece_bins: int
) -> dict[str, float]:
    """accuracy, NLL (nats), expected calibration error (L1, equal-width bins), agreement with the teacher."""
    num_classes = logits.shape[1]
    pred = logits.argmax(1)
    return {
        "accuracy": float((pred == y).float().mean()),
        "nll": float(F.cross_entropy(logits, y)),
        "ece": float(
            multiclass_calibration_error(logits.softmax(1), y, num_classes=num_classes, n_bins=ece_bins, norm="l1")
        ),
        "agreement": float((pred == teacher_pred).float().mean()),
    }


@torch.no_grad()
def latency_ms(model: nn.Module, x: torch.Tensor, repeats: int, threads: int, warmup: int = 3) -> float:
    """Median wall time of one forward pass over `x` on the CPU, in milliseconds."""
    model = model.cpu().eval()
    previous = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        for _ in range(warmup):
            model(x)
        times = []
        for _ in range(repeats):
            start = time.perf_counter()
            model(x)
            times.append((time.perf_counter() - start) * 1e3)
    finally:
        torch.set_num_threads(previous)
    return statistics.median(times)


def cost_metrics(
    model: nn.Module, weight_files: list[Path], x: torch.Tensor, repeats: int, threads: int
) -> dict[str, float]:
    """Parameters, bytes on disk and CPU latency at batch 1 and 256 (`x` repeated to 256 if shorter)."""
    many = x[:256] if len(x) >= 256 else x[torch.arange(256) % len(x)]
    return {
        "params": count_params(model),
        "size_bytes": sum(os.path.getsize(f) for f in weight_files),
        "latency_ms_b1": latency_ms(model, x[:1], repeats, threads),
        "latency_ms_b256": latency_ms(model, many, repeats, threads),
    }
