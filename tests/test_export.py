"""The export stage: ONNX files of the students, fp32 and int8, checked and evaluated in onnxruntime."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import torch

from kdcore.artifacts import sha256_file
from kdcore.checkpoint import load_model_dir
from kdcore.config import parse_params
from kdcore.data.prepared import load_split
from kdcore.inference import predict_logits
from kdcore.models.onnx import OnnxModel
from kdcore.quantize.onnx_export import export_onnx, quantize_int8
from kdcore.stages import get_stage
from tests.conftest import bare_onnxruntime_accuracy, copy_run, tiny_raw


@pytest.fixture(scope="module")
def trained(tiny_run: Path, tmp_path_factory: pytest.TempPathFactory):
    """A copy of the tiny pipeline's run, its export stage set to both students."""
    root = tmp_path_factory.mktemp("export")
    raw = tiny_raw(root)
    raw["export"] = {"models": ["student_kd", "student_scratch"], "calibration_samples": 128}
    params = copy_run(tiny_run, root, raw)
    shutil.rmtree(params.paths.exported)  # as DVC removes a stage's outputs before it runs
    return params


def test_export_writes_checked_onnx_files_and_their_metrics(trained, capsys) -> None:
    get_stage("export")(trained)
    # 128 calibration images asked, 400 in the transfer set: nothing to say
    assert "calibration_samples" not in capsys.readouterr().err
    rows = json.loads((trained.paths.metrics / "export.json").read_text())
    assert set(rows) == {"student_kd_onnx", "student_kd_int8", "student_scratch_onnx", "student_scratch_int8"}
    for key in ("student_kd", "student_scratch"):
        fp32, int8 = rows[f"{key}_onnx"], rows[f"{key}_int8"]
        assert fp32["agreement_fp32"] == 1.0 and fp32["max_abs_diff_fp32"] < 1e-3
        assert int8["size_bytes"] < fp32["size_bytes"]  # tiny models: the graph's own bytes weigh as much as weights
        assert int8["agreement_fp32"] > 0.9
        assert (fp32["file"], int8["file"]) == (f"export/{key}/model.onnx", f"export/{key}/model_int8.onnx")
        assert {"accuracy", "nll", "ece", "agreement"} <= set(int8) and not any(k.startswith("latency") for k in int8)
    # latencies are measured, so they live apart from the computed figures
    timings = json.loads((trained.paths.metrics / "timings" / "export.json").read_text())
    assert set(timings) == set(rows)
    assert all(set(row) == {"latency_ms_b1", "latency_ms_b256"} for row in timings.values())
    model, _ = load_model_dir(trained.paths.student_kd)
    test = load_split(trained.paths.prepared, "test")
    torch_accuracy = float((predict_logits(model, test.x).argmax(1) == test.y).float().mean())
    assert rows["student_kd_onnx"]["accuracy"] == pytest.approx(torch_accuracy, abs=1e-6)
    files = sorted((trained.paths.exported / "student_kd").iterdir())
    assert [f.name for f in files] == ["model.onnx", "model_int8.onnx"]
    for key, file in (("student_kd_onnx", files[0]), ("student_kd_int8", files[1])):  # what a deployment scores
        assert bare_onnxruntime_accuracy(file, trained.paths.prepared) == pytest.approx(
            rows[key]["accuracy"], abs=1e-6
        )  # rows keep 6 decimals
    hashes = [sha256_file(f) for f in files]
    get_stage("export")(trained)
    assert hashes == [sha256_file(f) for f in files]  # same inputs, same bytes


def test_onnx_round_trip_of_a_cnn_and_int8_of_it(trained, tmp_path: Path) -> None:
    teacher, _ = load_model_dir(trained.paths.teachers / "cnn")
    x = torch.randn(40, 1, 8, 8)
    export_onnx(teacher, (1, 8, 8), tmp_path / "cnn.onnx")
    runtime = OnnxModel(tmp_path / "cnn.onnx")
    assert torch.allclose(predict_logits(runtime, x), predict_logits(teacher, x), atol=1e-4)
    quantize_int8(tmp_path / "cnn.onnx", tmp_path / "cnn_int8.onnx", x, per_channel=True, reduce_range=True)
    int8 = predict_logits(OnnxModel(tmp_path / "cnn_int8.onnx"), x)
    assert int8.shape == (40, 10)
    assert (tmp_path / "cnn_int8.onnx").stat().st_size < (tmp_path / "cnn.onnx").stat().st_size
    assert not list(tmp_path.glob("*.pre.onnx"))  # the pre-processed copy is not left behind
    import onnx

    for name in ("cnn.onnx", "cnn_int8.onnx"):  # no stack traces: the bytes do not depend on the checkout's path
        graph = onnx.load(str(tmp_path / name)).graph
        assert not any(node.metadata_props or "File " in node.doc_string for node in graph.node)


def test_fewer_calibration_images_than_asked_are_said(trained, tmp_path: Path, capsys) -> None:
    raw = json.loads(trained.model_dump_json())
    raw["export"] = {"models": ["student_kd"], "calibration_samples": 1000}
    raw["paths"]["exported"] = str(tmp_path / "export")
    raw["paths"]["metrics"] = str(tmp_path / "metrics")
    get_stage("export")(parse_params(raw))
    err = capsys.readouterr().err
    assert "warning: export.calibration_samples=1000 but the transfer set holds 400 images" in err, err
