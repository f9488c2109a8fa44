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
    "data": {"source": "digits", "path": None, "splits": {"teacher_train": 400, "transfer": 400, "test": 300}},
    "teacher": {
        "model": {"name": "cnn", "channels": [8, 16], "hidden": 32, "batchnorm": True},
        "train": {"epochs": 6, "batch_size": 16, "lr": 0.01, "shift": 1},
    },
    "transfer": {"views": 2, "shift": 1, "include_teacher_train": False, "labeled": True},
    "student": {"model": {"name": "mlp", "hidden": [16]}, "train": {"epochs": 3, "batch_size": 32, "lr": 0.01}},
    "distill": {"loss": "hinton", "temperature": 4.0, "alpha": 0.9},
    "evaluate": {"ece_bins": 10, "latency_repeats": 2, "latency_threads": 1},
}


def tiny_raw(root: Path | None = None, **overrides: object) -> dict:
    """The tiny config as a dict; with `root`, every path points inside it."""
    raw = copy.deepcopy(TINY)
    if root is not None:
        raw["paths"] = {
            "prepared": str(root / "data/prepared"),
            "teacher": str(root / "models/teacher"),
            "transfer": str(root / "data/transfer"),
            "student_kd": str(root / "models/student_kd"),
            "student_scratch": str(root / "models/student_scratch"),
            "metrics": str(root / "metrics"),
            "plots": str(root / "plots"),
            "reports": str(root / "reports"),
            "live": str(root / "dvclive"),
            "work": str(root / ".kdflow"),
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
