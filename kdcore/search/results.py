"""A finished study as tables and a picture: one row per trial, the Pareto front of the feasible trained
students (validation accuracy up; latency and file size down), the chosen student, and the front's plot."""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd

from kdcore.search.space import describe

COLUMNS = [
    "trial", "status", "student", "family", "spec", "params", "size_bytes", "latency_ms", "latency_ms_b256",
    "feasible", "val_accuracy", "epochs", "train_seconds", "duplicate_of", "on_front", "chosen",
]  # fmt: skip


def trial_rows(trials: list) -> pd.DataFrame:
    """One row per trial of the study, in trial order (failed and running trials too, as they are)."""
    rows = []
    for t in sorted(trials, key=lambda t: t.number):
        attrs = t.user_attrs
        spec = attrs.get("arch")
        cost = attrs.get("cost", {})
        status = attrs.get("status") or t.state.name.lower()
        if t.state.name in ("FAIL", "RUNNING", "WAITING"):
            status = t.state.name.lower()
        trained = status in ("complete", "pruned")
        values = t.intermediate_values
        rows.append(
            {
                "trial": t.number,
                "status": status,
                "student": describe(spec) if spec else "",
                "family": spec["name"] if spec else "",
                "spec": json.dumps(spec, sort_keys=True) if spec else "",
                "params": cost.get("params"),
                "size_bytes": cost.get("size_bytes"),
                "latency_ms": cost.get("latency_ms"),
                "latency_ms_b256": cost.get("latency_ms_b256"),
                "feasible": bool(cost) and all(v <= 0 for v in attrs.get("constraints", [0.0])),
                "val_accuracy": round(values[max(values)], 6) if trained and values else None,
                "epochs": attrs.get("epochs"),
                "train_seconds": attrs.get("train_seconds"),
                "duplicate_of": attrs.get("duplicate_of"),
            }
        )
    frame = pd.DataFrame(rows, columns=COLUMNS[:-2])
    frame["on_front"] = pareto_front(frame)
    frame["chosen"] = False
    return frame


def pareto_front(frame: pd.DataFrame) -> pd.Series:
    """Whether each row is a complete, feasible trial that no other such trial dominates (at least as
    accurate, as fast and as small, and better in one); duplicates of a trial are not on the front."""
    candidates = frame[(frame["status"] == "complete") & frame["feasible"] & frame["duplicate_of"].isna()]
    on = pd.Series(False, index=frame.index)
    points = candidates[["val_accuracy", "latency_ms", "size_bytes"]].to_numpy(dtype=float)
    for i, (acc, lat, size) in zip(candidates.index, points, strict=True):
        dominated = any(
            a >= acc and la <= lat and s <= size and (a > acc or la < lat or s < size) for a, la, s in points
        )
        on[i] = not dominated
    return on


def choose(frame: pd.DataFrame, rule) -> int | None:
    """The row index of the chosen student under `rule` (params search.choose), or None without a feasible
    complete trial. Ties go to the earlier trial."""
    done = frame[(frame["status"] == "complete") & frame["feasible"] & frame["duplicate_of"].isna()]
    if done.empty:
        return None
    best = done["val_accuracy"].max()
    if rule.by == "accuracy":
        return int(done[done["val_accuracy"] == best].index[0])
    near = done[done["val_accuracy"] >= best - rule.within_points / 100]
    column = {"latency_ms": "latency_ms", "size_bytes": "size_bytes", "params": "params"}[rule.by]
    return int(near.sort_values([column, "trial"], kind="stable").index[0])


def saved_by_pruning(frame: pd.DataFrame, epochs: int) -> dict[str, float]:
    """Pruned trials and the training seconds they did not spend: each one's own seconds per epoch times
    the epochs it did not train."""
    pruned = frame[(frame["status"] == "pruned") & frame["duplicate_of"].isna()]
    per_epoch = pruned["train_seconds"] / pruned["epochs"]
    return {
        "pruned_trials": int(len(pruned)),
        "pruned_epochs_saved": int((epochs - pruned["epochs"]).sum()),
        "pruned_seconds_saved": round(float((per_epoch * (epochs - pruned["epochs"])).sum()), 1),
    }


def save_front_png(path: Path, frame: pd.DataFrame, budget, title: str) -> None:
    """Validation accuracy against latency at batch 1, marker area by file size: the front (of accuracy,
    latency and size) in blue, other feasible trials in grey, pruned ones hollow, over-budget ones as crosses
    at the bottom."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from kdcore.evaluate.plots import save_png

    fig, ax = plt.subplots(figsize=(7.5, 5))
    unique = frame[frame["duplicate_of"].isna()]
    if unique.empty:
        ax.axis("off")
        ax.text(0.5, 0.5, "no search ran (search.trials: 0)", ha="center", va="center", transform=ax.transAxes)
        save_png(fig, path)
        plt.close(fig)
        return
    trained = unique[unique["status"].isin(["complete", "pruned"])]
    scale = 300 / max(float(unique["size_bytes"].astype(float).max()), 1.0)

    def draw(rows: pd.DataFrame, y, **style) -> None:
        if not rows.empty:
            sizes = (rows["size_bytes"].astype(float) * scale).clip(lower=12) * style.pop("grow", 1.0)
            ax.scatter(rows["latency_ms"], y if y is not None else rows["val_accuracy"] * 100, s=sizes, **style)

    complete = trained[trained["status"] == "complete"]
    draw(complete[~complete["on_front"]], None, c="0.6", alpha=0.7, label="dominated")
    draw(trained[trained["status"] == "pruned"], None, facecolors="none", edgecolors="0.5",
         label="stopped early (accuracy when stopped)")  # fmt: skip
    draw(complete[complete["on_front"]], None, c="tab:blue", label="Pareto front (accuracy, latency, size)")
    draw(frame[frame["chosen"]], None, facecolors="none", edgecolors="tab:red", linewidths=2, grow=2.5,
         label="chosen")  # fmt: skip
    over = unique[unique["status"] == "over budget"]
    floor = (trained["val_accuracy"].min() * 100 - 2) if not trained.empty else 0.0
    if not over.empty:
        ax.scatter(over["latency_ms"], [floor] * len(over), s=30, marker="x", c="tab:red",
                   label="over budget (not trained), drawn at the bottom")  # fmt: skip
    if budget.max_latency_ms is not None:
        ax.axvline(budget.max_latency_ms, ls="--", c="tab:red", lw=1, label="max_latency_ms")
    ax.set_xlabel("latency at batch 1 in onnxruntime, one thread (ms)")
    ax.set_ylabel("validation accuracy (%)")
    ax.set_title(title + " (marker area: file size)", fontsize=10)
    ax.legend(fontsize=8, loc="lower right")
    ax.grid(alpha=0.3)
    save_png(fig, path)
    plt.close(fig)
