"""The quality gate: is the distilled student good enough to be committed?

Pure logic on two metric summaries; the orchestration layer decides what a failure stops.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True)
class GateResult:
    passed: bool
    message: str


def check_gate(
    current: dict[str, Any],
    previous: dict[str, Any] | None,
    min_accuracy: float,
    max_drop: float,
    model: str = "student_kd",
) -> GateResult:
    """Fails when `model`'s accuracy is below `min_accuracy`, or more than `max_drop` below `previous`.

    Both numbers are in every message, so a failure says how far off it was.
    """
    if model not in current or "accuracy" not in current[model]:
        return GateResult(False, f"gate: metrics have no {model}.accuracy")
    accuracy = float(current[model]["accuracy"])
    if accuracy < min_accuracy:
        return GateResult(False, f"gate: {model} accuracy {accuracy:.4f} is below the floor {min_accuracy:.4f}")
    if previous is not None and model in previous and "accuracy" in previous[model]:
        before = float(previous[model]["accuracy"])
        if before - accuracy > max_drop:
            return GateResult(
                False,
                f"gate: {model} accuracy {accuracy:.4f} dropped {before - accuracy:.4f} from the last committed "
                f"{before:.4f}, more than the budget {max_drop:.4f}",
            )
        return GateResult(True, f"gate: {model} accuracy {accuracy:.4f} (last committed {before:.4f}) passes")
    return GateResult(True, f"gate: {model} accuracy {accuracy:.4f} passes the floor {min_accuracy:.4f}")
