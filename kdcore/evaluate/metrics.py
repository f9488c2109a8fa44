"""Quality and cost of one model on the test split."""

from __future__ import annotations

import statistics
import time

import torch
import torch.nn.functional as F
from torch import nn
from torchmetrics.functional.classification import multiclass_calibration_error


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
