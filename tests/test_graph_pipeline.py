"""Graph data through the pipeline: the same stages and dvc.yaml, a tiny random graph end to end through
`dvc repro`, and the params refused on graph data."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from kdcore.config import parse_params
from kdcore.errors import ConfigError, DataError
from kdcore.stages import STAGE_NAMES, get_stage
from tests.conftest import tiny_raw
from tests.projects import make_project, sh
from tests.test_graph import block_graph


def graph_raw(root: Path, path: Path, setting: str = "transductive") -> dict:
    raw = tiny_raw(root)
    graph = {"split": "random", "train_per_class": 5, "validation": 40, "test": 100, "setting": setting,
             "held_out": 0.3, "normalize_features": False, "patience": 30}  # fmt: skip
    raw["data"] = {"source": "graph_npz", "path": str(path), "graph": graph}
    train = {"epochs": 40, "lr": 0.01, "weight_decay": 5e-4, "schedule": "constant"}
    raw["teachers"] = {"sage": {"model": {"name": "sage", "hidden": 16}, "train": train}}
    raw["student"] = {"model": {"name": "mlp", "hidden": [32], "dropout": 0.5},
                      "train": {**train, "batch_size": 64}}  # fmt: skip
    raw["distill"] = {"terms": [{"name": "ce", "weight": 0.2}, {"name": "kd", "weight": 0.8}], "temperature": 1.0}
    raw["transfer"] = {}
    raw["evaluate"] = {"latency_repeats": 3}
    return raw


@pytest.fixture(scope="module")
def graph_file(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("graph") / "graph.npz"
    np.savez(path, **block_graph(n=300, features=16))
    return path


def test_every_stage_runs_on_a_graph_in_process(graph_file: Path, tmp_path: Path) -> None:
    params = parse_params(graph_raw(tmp_path, graph_file, setting="inductive"))
    for stage in STAGE_NAMES:
        get_stage(stage)(params)
    meta = json.loads((tmp_path / "data/prepared/meta.json").read_text())
    assert meta["kind"] == "graph" and meta["sizes"]["held_out"] == 30 and meta["sizes"]["test"] == 30
    summary = json.loads((tmp_path / "metrics/summary.json").read_text())
    assert {"teacher_sage", "student_kd", "student_scratch", "student_kd_onnx", "student_kd_onnx_int8"} <= set(summary)
    assert summary["teacher_sage"]["accuracy"] > summary["student_scratch"]["accuracy"]
    assert abs(summary["student_kd_onnx"]["accuracy"] - summary["student_kd"]["accuracy"]) < 0.02
    latency = json.loads((tmp_path / "metrics/timings/evaluate.json").read_text())["latency"]
    assert latency["teacher_sage"]["latency_ms_b1000"] > 0 and latency["student_kd_onnx"]["latency_ms_b1"] > 0
    assert "graph data" in (tmp_path / "reports/report.md").read_text()


@pytest.mark.parametrize(
    ("change", "message"),
    [
        (lambda r: r["teachers"]["sage"]["model"].update(name="cnn", channels=[4]), r"teachers.sage.model: cnn takes"),
        (lambda r: r["distill"].update(terms=[{"name": "dkd", "weight": 1.0}]), r"distill.terms: dkd not for graph"),
        (lambda r: r["transfer"].update(source="synthetic"), r"transfer.source: graph data distils on the graph"),
        (lambda r: r["data"].update(splits={"teacher_train": 1, "transfer": 1, "test": 1}), r"data.splits: not for"),
        (lambda r: r["data"].update(source="planetoid"), r"data.name is required for data.source=planetoid"),
    ],
)
def test_settings_without_meaning_on_graphs_are_refused(graph_file: Path, tmp_path: Path, change, message) -> None:
    raw = graph_raw(tmp_path, graph_file)
    change(raw)
    with pytest.raises(ConfigError, match=message):
        parse_params(raw)


def test_check_params_reads_the_graph_before_any_stage(tmp_path: Path) -> None:
    arrays = block_graph()
    arrays["edge_index"] = np.array([[0, 4], [1, 4]])
    np.savez(tmp_path / "bad.npz", **arrays)
    with pytest.raises(DataError, match=r"bad.npz edge_index: edge_index column 1 is a self-loop on node 4"):
        get_stage("check_params")(parse_params(graph_raw(tmp_path, tmp_path / "bad.npz")))


def test_a_tiny_graph_runs_end_to_end_through_dvc_repro(graph_file: Path, tmp_path: Path) -> None:
    repo = make_project(tmp_path / "repo", graph_raw(tmp_path / "repo", graph_file))
    sh(repo, "dvc", "repro")
    summary = json.loads((repo / "metrics/summary.json").read_text())
    assert summary["student_kd"]["accuracy"] > 0.5 and (repo / "models/export/student_kd/model_int8.onnx").is_file()
    status = sh(repo, "dvc", "status").stdout
    assert "changed" not in status  # every output as dvc.lock records it
