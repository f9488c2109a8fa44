"""Continual-learning metrics of an accuracy matrix.

R[i][j] is the accuracy after learning increment i on the test data of increment j (T x T, rows in
the order the increments were learned). With T increments:

    ACC        = 1/T * sum_j R[T-1][j]                           average accuracy at the end
    BWT        = 1/(T-1) * sum_{j<T-1} (R[T-1][j] - R[j][j])     backward transfer (Lopez-Paz and Ranzato 2017);
                                                                 negative when learning later increments hurts
    forgetting = 1/(T-1) * sum_{j<T-1} max_{l<T-1} (R[l][j] - R[T-1][j])
                                                                 (Chaudhry et al. 2018, "Riemannian Walk",
                                                                 max-based: the best accuracy ever had on j,
                                                                 minus the accuracy at the end)
    newest     = R[T-1][T-1]

With one increment BWT and forgetting are 0 (nothing learned before it to forget).
"""

from __future__ import annotations

from collections.abc import Sequence


def continual_metrics(matrix: Sequence[Sequence[float]]) -> dict[str, float]:
    """ACC, BWT, forgetting and the newest increment's accuracy of a square accuracy matrix."""
    t = len(matrix)
    if t == 0 or any(len(row) != t for row in matrix):
        raise ValueError(f"the accuracy matrix must be square and non-empty, got {[len(r) for r in matrix]} columns")
    last = matrix[t - 1]
    acc = sum(last) / t
    if t == 1:
        return {"acc": acc, "bwt": 0.0, "forgetting": 0.0, "newest": last[0]}
    bwt = sum(last[j] - matrix[j][j] for j in range(t - 1)) / (t - 1)
    forgetting = sum(max(matrix[k][j] for k in range(t - 1)) - last[j] for j in range(t - 1)) / (t - 1)
    return {"acc": acc, "bwt": bwt, "forgetting": forgetting, "newest": last[t - 1]}
