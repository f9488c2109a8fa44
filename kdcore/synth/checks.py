"""What the synthetic set must satisfy before any student learns from it (Great Expectations suites)."""

from __future__ import annotations

import pandas as pd
import torch
import torch.nn.functional as F

from kdcore.data.validate import Check
from kdcore.synth import PixelBounds

RANGE_TOLERANCE = 1e-4  # normalised units


def mean_pairwise_distance(x: torch.Tensor, max_images: int = 512) -> torch.Tensor:
    """(N,) for the first `max_images` images: mean RMS distance (per pixel) to each of the others.

    Near zero when the method collapsed onto a few images; about sqrt(2) x the pixel std for
    independent images."""
    flat = x[:max_images].flatten(1).double()  # (n, D)
    n = len(flat)
    if n < 2:
        return torch.zeros(n, dtype=torch.float64)
    distances = torch.cdist(flat, flat) / flat.shape[1] ** 0.5  # (n, n) RMS distances
    return distances.sum(1) / (n - 1)


def synthetic_tables(
    images: torch.Tensor, teacher_logits: torch.Tensor, bounds: PixelBounds, num_classes: int
) -> dict[str, pd.DataFrame]:
    """The tables the checks read: pixels per image, teacher predictions per image, shares per class,
    diversity per image."""
    flat = images.flatten(2)  # (N, C, H*W)
    finite = torch.isfinite(flat).all(2).all(1)
    below = (bounds.low.view(1, -1, 1) - flat).amax(dim=(1, 2))  # > 0: under the darkest valid pixel
    above = (flat - bounds.high.view(1, -1, 1)).amax(dim=(1, 2))
    pixels = pd.DataFrame(
        {
            "below_range": torch.where(finite, below, torch.nan).double().numpy(),
            "above_range": torch.where(finite, above, torch.nan).double().numpy(),
        }
    )
    probs = F.softmax(teacher_logits.double(), dim=1)
    predicted = probs.argmax(1)
    predictions = pd.DataFrame({"predicted": predicted.numpy(), "confidence": probs.max(1).values.numpy()})
    counts = torch.bincount(predicted, minlength=num_classes).double()
    classes = pd.DataFrame({"class": range(num_classes), "share": (counts / max(len(predicted), 1)).numpy()})
    diversity = pd.DataFrame({"distance": mean_pairwise_distance(torch.nan_to_num(images)).numpy()})
    return {"pixels": pixels, "predictions": predictions, "classes": classes, "diversity": diversity}


def synthetic_checks(
    min_class_share: float, min_mean_confidence: float, min_diversity: float
) -> dict[str, list[Check]]:
    """Checks per table: finite values inside the valid pixel range, every class among the teacher's
    predictions with at least `min_class_share`, mean confidence, and a diversity floor."""
    return {
        "pixels": [
            ("ExpectColumnValuesToNotBeNull", {"column": "below_range"}),
            ("ExpectColumnValuesToBeBetween", {"column": "below_range", "max_value": RANGE_TOLERANCE}),
            ("ExpectColumnValuesToBeBetween", {"column": "above_range", "max_value": RANGE_TOLERANCE}),
        ],
        "predictions": [
            (
                "ExpectColumnMeanToBeBetween",
                {"column": "confidence", "min_value": min_mean_confidence, "max_value": 1.0},
            ),
        ],
        "classes": [
            ("ExpectColumnValuesToBeBetween", {"column": "share", "min_value": min_class_share, "max_value": 1.0}),
        ],
        "diversity": [
            ("ExpectColumnMeanToBeBetween", {"column": "distance", "min_value": min_diversity}),
        ],
    }
