"""Measured wall-clock figures (latencies, training seconds) kept apart from computed ones.

What a run computes (accuracy, sizes, agreement) is the same bytes on every identical run; what it
measures moves between runs and machines. Stages write the first to metrics/<name>.json and the
second to metrics/timings/<name>.json, so only the files under metrics/timings/ (and
reports/latency.md) differ between two identical `dvc repro -f` runs.
"""

from __future__ import annotations

import json
from pathlib import Path

from kdcore.artifacts import write_json

MEASURED = ("latency",)  # keys of wall-clock measurements


def split_measured(rows: dict[str, dict]) -> tuple[dict[str, dict], dict[str, dict]]:
    """Each row's figures in two: what the run computed, and its wall-clock measurements."""
    computed = {name: {k: v for k, v in row.items() if not k.startswith(MEASURED)} for name, row in rows.items()}
    measured = {name: {k: v for k, v in row.items() if k.startswith(MEASURED)} for name, row in rows.items()}
    return computed, {name: row for name, row in measured.items() if row}


def read_rows(metrics: Path, name: str) -> dict[str, dict]:
    """The rows of metrics/<name>.json with their measurements from metrics/timings/ merged back in
    (`summary`, which holds evaluate's rows and the deployed files', takes the latencies of all three)."""
    rows = json.loads((metrics / f"{name}.json").read_text())
    for stage in ("evaluate", "export", "quantize") if name == "summary" else (name,):
        timings = metrics / "timings" / f"{stage}.json"
        if timings.is_file():
            for key, measured in json.loads(timings.read_text()).items():
                if key in rows:
                    rows[key].update(measured)
    return rows


def write_rows(metrics: Path, name: str, rows: dict[str, dict]) -> None:
    """metrics/<name>.json: what a stage computed, the same bytes on every identical run;
    metrics/timings/<name>.json: its latencies, which are measured and move from run to run."""
    computed, measured = split_measured(rows)
    write_json(Path(metrics) / f"{name}.json", computed)
    write_json(Path(metrics) / "timings" / f"{name}.json", measured)


def write_training_time(metrics: Path, name: str, histories: list[list[dict[str, float]]]) -> None:
    """metrics/timings/<name>.json: the wall-clock seconds of a training (every generation, resumed
    epochs included)."""
    epochs = [record.get("seconds", 0.0) for history in histories for record in history]
    write_json(
        Path(metrics) / "timings" / f"{name}.json",
        {"train_seconds": round(sum(epochs), 2), "epochs": len(epochs)},
    )
