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


def check_update_gate(matrix: list[list[float]], names: list[str], max_drop: float, min_newest: float) -> GateResult:
    """The lifelong gate on an accuracy matrix: the newest increment must reach `min_newest`, and no
    earlier increment may lose more than `max_drop` against the row before (the last promoted student)."""
    if len(matrix) < 2:
        return GateResult(True, "gate: no increment learned yet; nothing to gate")
    last, before = matrix[-1], matrix[-2]
    newest = last[-1]
    if newest < min_newest:
        return GateResult(
            False,
            f"gate: newest increment {names[-1]} accuracy {newest:.4f} is below lifelong.gate.min_newest "
            f"{min_newest:.4f}",
        )
    drops = [(before[j] - last[j], j) for j in range(len(last) - 1)]
    drop, j = max(drops)
    if drop > max_drop:
        return GateResult(
            False,
            f"gate: accuracy on increment {names[j]} fell {drop:.4f} ({before[j]:.4f} -> {last[j]:.4f}), more than "
            f"lifelong.gate.max_drop {max_drop:.4f}",
        )
    return GateResult(
        True,
        f"gate: newest increment {names[-1]} accuracy {newest:.4f}, largest drop on earlier ones {drop:.4f}: passes",
    )
