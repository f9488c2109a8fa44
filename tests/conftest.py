"""Shared fixtures: tiny params on scikit-learn's digits, so every stage runs in seconds."""

from __future__ import annotations

import copy
import os
from pathlib import Path

import pytest
import yaml

from kdcore.config import Params, parse_params

os.environ.setdefault("GX_ANALYTICS_ENABLED", "false")
os.environ.setdefault("DVC_NO_ANALYTICS", "1")
os.environ.setdefault("TQDM_DISABLE", "1")

ROOT = Path(__file__).resolve().parents[1]

TINY = {
    "seed": 0,
    "device": "cpu",
    "cpu_threads": 1,
    "data": {"source": "digits", "path": None, "splits": {"teacher_train": 400, "transfer": 400, "test": 300}},
    "teachers": {
        "cnn": {
            "model": {"name": "cnn", "channels": [8, 16], "hidden": 32, "batchnorm": True},
            "train": {"epochs": 6, "batch_size": 16, "lr": 0.01, "shift": 1},
        },
    },
    "transfer": {"views": 2, "shift": 1, "include_teacher_train": False, "labeled": True},
    "student": {"model": {"name": "mlp", "hidden": [16]}, "train": {"epochs": 3, "batch_size": 32, "lr": 0.01}},
    "distill": {"temperature": 4.0, "terms": [{"name": "ce", "weight": 0.1}, {"name": "kd", "weight": 0.9}]},
    "evaluate": {"ece_bins": 10, "latency_repeats": 2, "latency_threads": 1},
    "lifelong": {"steps": 60, "teacher_steps": 30, "memory": 40, "batch_size": 16, "replay_batch_size": 16},
}


SECOND_TEACHER = {
    "model": {"name": "mlp", "hidden": [64]},
    "train": {"epochs": 6, "batch_size": 16, "lr": 0.01, "shift": 1},
    "seed": 1,
    "subset": 0.8,
}


def with_two_teachers(raw: dict, method: str = "mean") -> dict:
    """`raw` with a second teacher (an MLP on 80% of the teacher split) and ensemble soft labels."""
    raw["teachers"]["mlp"] = copy.deepcopy(SECOND_TEACHER)
    raw["transfer"]["ensemble"] = {"method": method, "weights": [0.7, 0.3] if method == "weights" else None}
    return raw


def tiny_raw(root: Path | None = None, **overrides: object) -> dict:
    """The tiny config as a dict; with `root`, every path points inside it."""
    raw = copy.deepcopy(TINY)
    if root is not None:
        raw["paths"] = {
            "prepared": str(root / "data/prepared"),
            "teachers": str(root / "models/teachers"),
            "transfer": str(root / "data/transfer"),
            "synthetic": str(root / "data/synthetic"),
            "student_kd": str(root / "models/student_kd"),
            "student_scratch": str(root / "models/student_scratch"),
            "metrics": str(root / "metrics"),
            "plots": str(root / "plots"),
            "reports": str(root / "reports"),
            "live": str(root / "dvclive"),
            "work": str(root / ".kdflow"),
            "landing": str(root / "data/landing"),
            "increments": str(root / "data/increments"),
            "updates": str(root / "models/updates"),
            "exported": str(root / "models/export"),
            "quantized": str(root / "models/quantized"),
        }
    for dotted, value in overrides.items():
        node = raw
        *parents, leaf = dotted.split("__")
        for p in parents:
            node = node[p]
        node[leaf] = value
    return raw


@pytest.fixture
def tiny_params(tmp_path: Path) -> Params:
    return parse_params(tiny_raw(tmp_path))


def write_params(path: Path, raw: dict) -> Path:
    path.write_text(yaml.safe_dump(raw, sort_keys=False))
    return path


def cli_error(*module_and_args: str) -> str:
    """Runs `python -m <module> <args>` from the project root; it must exit 2 with exactly one
    line on stderr, which is returned."""
    import subprocess
    import sys

    result = subprocess.run(
        [sys.executable, "-m", *module_and_args], cwd=ROOT, capture_output=True, text=True, timeout=120
    )
    assert result.returncode == 2, (result.returncode, result.stderr[-2000:])
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, lines
    return lines[0]
