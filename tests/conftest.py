"""Shared fixtures: tiny params on scikit-learn's digits, so every stage runs in seconds.

The expensive setup is built once per test run and copied per test (litgpt's tiny configs, timm's
shared fixtures): `tiny_run`, every stage of the tiny pipeline run in-process, and `tiny_repo`, the
tiny pipeline reproduced by `dvc repro` in a git repository. Under pytest-xdist the workers share one
build of each (a file lock: the first worker builds, the others wait and copy).
"""

from __future__ import annotations

import copy
import json
import os
import shutil
from collections.abc import Callable
from pathlib import Path

import pytest
import torch
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
            "search": str(root / "models/search"),
        }
    for dotted, value in overrides.items():
        node = raw
        *parents, leaf = dotted.split("__")
        for p in parents:
            node = node.setdefault(p, {})
        node[leaf] = value
    return raw


@pytest.fixture
def tiny_params(tmp_path: Path) -> Params:
    return parse_params(tiny_raw(tmp_path))


def shared_build(tmp_path_factory: pytest.TempPathFactory, name: str, build: Callable[[Path], None]) -> Path:
    """`build(dir)` run once per test run, whatever the number of xdist workers; returns the directory.
    A build that failed is not retried by the next worker: it fails the same way, with its error."""
    from filelock import FileLock

    base = tmp_path_factory.getbasetemp()
    if os.environ.get("PYTEST_XDIST_WORKER"):
        base = base.parent  # the run's directory, above each worker's own
    target, done = base / f"shared-{name}", base / f"shared-{name}.json"
    with FileLock(str(base / f"shared-{name}.lock")):
        if not done.is_file():
            try:
                build(target)
                done.write_text(json.dumps({"ok": True}))
            except BaseException as err:
                done.write_text(json.dumps({"ok": False, "error": f"{type(err).__name__}: {err}"}))
                raise
    state = json.loads(done.read_text())
    if not state["ok"]:
        pytest.fail(f"the shared {name} build failed: {state['error']}")
    return target


def _run_every_stage(root: Path) -> None:
    from kdcore.stages import STAGE_NAMES, get_stage

    params = parse_params(tiny_raw(root))
    for name in STAGE_NAMES:
        get_stage(name)(params)


@pytest.fixture(scope="session")
def tiny_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The tiny pipeline, every stage run once in-process (paths as `tiny_raw(root)` puts them). Read
    it, never write to it: copy it with `copy_run` to change anything."""
    return shared_build(tmp_path_factory, "tiny_run", _run_every_stage)


def copy_run(run: Path, dest: Path, raw: dict | None = None, **overrides: object) -> Params:
    """A copy of a finished tiny run at `dest`, and its params: `raw` (rooted at `dest`, as
    `tiny_raw(dest, ...)` makes it) or the tiny ones with `overrides`."""
    shutil.copytree(run, dest, dirs_exist_ok=True)
    if raw is None:
        raw = tiny_raw(dest, **overrides)
    return parse_params(raw)


def repo_raw() -> dict:
    """The params of the shared DVC project: two teachers (an ensemble), a gate the tiny student passes,
    and quantization without its two QAT trainings (they are tested in-process, test_quantize.py and
    test_stages.py; here the quantize stage reruns in several tests)."""
    raw = with_two_teachers(tiny_raw())
    raw["quantize"] = {"int8_qat": False, "low_bit_qat": False}
    raw["gate"] = {"min_accuracy": 0.3, "max_drop": 0.5}
    raw["orchestration"] = {"retries": 1, "retry_delay_s": 0}
    return raw


def _reproduce_project(root: Path) -> None:
    from tests.projects import make_project, sh

    repo = make_project(root, repo_raw())
    sh(repo, "dvc", "repro")
    sh(repo, "git", "add", "-A")
    sh(repo, "git", "commit", "-qm", "the tiny pipeline, reproduced")


@pytest.fixture(scope="session")
def tiny_repo(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A git repository of the real code, dvc.yaml and `repo_raw()` params in which `dvc repro` ran
    every stage once and the results were committed (DVC's cache and run cache included). Read it,
    never write to it: copy it with `copy_repo`."""
    return shared_build(tmp_path_factory, "tiny_repo", _reproduce_project)


def copy_repo(repo: Path, dest: Path) -> Path:
    """A copy of a repository (git, DVC cache and workspace) at `dest`."""
    shutil.copytree(repo, dest, symlinks=True)
    return dest


@pytest.fixture(scope="session")
def prefect_server():
    """One temporary Prefect server for the test run (per xdist worker)."""
    from prefect.testing.utilities import prefect_test_harness

    with prefect_test_harness(server_startup_timeout=120):
        yield


def bare_onnxruntime_accuracy(onnx_file: Path, prepared: Path) -> float:
    """The file's test accuracy as a deployment computes it: a plain onnxruntime session fed the raw
    test samples (scikit-learn's digits, pixels in [0, 1]) preprocessed with nothing but what the
    file's own metadata says."""
    import numpy as np
    import onnxruntime as ort
    import pandas as pd

    from kdcore.data.sources import load_source

    session = ort.InferenceSession(str(onnx_file), providers=["CPUExecutionProvider"])
    info = session.get_modelmeta().custom_metadata_map
    mean = np.array(json.loads(info["kdflow.mean"]), dtype=np.float32).reshape(1, -1, 1, 1)
    std = np.array(json.loads(info["kdflow.std"]), dtype=np.float32).reshape(1, -1, 1, 1)
    manifest = pd.read_csv(prepared / "manifest.csv", dtype={"sample_id": str})
    test_ids = manifest.loc[manifest["split"] == "test", "sample_id"].tolist()
    raw = load_source("digits")
    row = {sample: i for i, sample in enumerate(raw.ids)}
    rows = [row[sample] for sample in test_ids]
    x, y = raw.images.numpy()[rows], raw.labels.numpy()[rows]
    assert x.min() >= 0 and x.max() <= 1  # raw pixels, as a user has them
    (logits,) = session.run(None, {session.get_inputs()[0].name: (x - mean) / std})
    names = json.loads(info["kdflow.class_names"])
    return float(np.mean([names[k] == raw.class_names[t] for k, t in zip(logits.argmax(1), y, strict=True)]))


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


def prepared_tensors(prepared: Path, split: str) -> dict[str, torch.Tensor]:
    """A prepared split as the stages read it: {"x": normalised samples, "y": labels}."""
    from kdcore.data.prepared import load_split

    loaded = load_split(prepared, split)
    return {"x": loaded.x, "y": loaded.y}
