"""Teachers trained elsewhere: a safetensors file for a registry architecture, or an ONNX model run by
onnxruntime, trained in one project and used in another."""

from __future__ import annotations

import json
import warnings
from pathlib import Path

import onnx
import pytest
import torch

from kdcore.artifacts import load_tensors
from kdcore.checkpoint import load_model_dir
from kdcore.config import parse_params
from kdcore.errors import ConfigError, DataError
from kdcore.stages import get_stage
from tests.conftest import TINY, copy_run, prepared_tensors, tiny_raw

CNN = TINY["teachers"]["cnn"]["model"]


@pytest.fixture(scope="module")
def elsewhere(tiny_run: Path, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """Project A trains a teacher (the tiny run's); its weights and an ONNX export are what another
    project receives."""
    root = tmp_path_factory.mktemp("project_a")
    copy_run(tiny_run, root)
    model, _ = load_model_dir(root / "models/teachers/cnn")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(
            model, (torch.zeros(2, 1, 8, 8),), str(root / "teacher.onnx"), dynamo=False,
            input_names=["x"], output_names=["logits"], dynamic_axes={"x": {0: "n"}, "logits": {0: "n"}},
        )  # fmt: skip
    accuracy = json.loads((root / "dvclive/teachers/cnn/metrics.json").read_text())["eval"]["accuracy"]
    return {"root": root, "weights": root / "models/teachers/cnn/model.safetensors",
            "onnx": root / "teacher.onnx", "accuracy": accuracy}  # fmt: skip


def project_with(root: Path, teacher: dict) -> dict:
    raw = tiny_raw(root)
    raw["teachers"] = {"given": teacher}
    return raw


def test_pretrained_weights_are_used_as_they_are(elsewhere: dict, tmp_path: Path, capsys) -> None:
    params = parse_params(project_with(tmp_path, {"model": CNN, "pretrained": str(elsewhere["weights"])}))
    for stage in ("prepare", "train_teacher", "synthesize", "build_transfer", "distill", "train_student_scratch",
                  "evaluate"):  # fmt: skip
        get_stage(stage)(params)
    out = capsys.readouterr().out
    assert "used as it is" in out and "after 6 epochs" not in out  # no training
    assert torch.equal(
        load_tensors(tmp_path / "models/teachers/given/model.safetensors")["features.0.weight"],
        load_tensors(elsewhere["weights"])["features.0.weight"],
    )
    summary = json.loads((tmp_path / "metrics/summary.json").read_text())
    assert summary["teacher"]["accuracy"] == pytest.approx(elsewhere["accuracy"], abs=1e-6)  # same data, same split
    model = json.loads((tmp_path / "models/teachers/given/model.json").read_text())
    assert model["config"]["origin"] == "pretrained" and len(model["config"]["source_sha256"]) == 64


def test_an_onnx_teacher_is_a_black_box_that_teaches(elsewhere: dict, tmp_path: Path) -> None:
    params = parse_params(project_with(tmp_path, {"onnx": str(elsewhere["onnx"])}))
    for stage in ("prepare", "train_teacher", "synthesize", "build_transfer", "distill", "train_student_scratch",
                  "evaluate"):  # fmt: skip
        get_stage(stage)(params)
    assert (tmp_path / "models/teachers/given/model.onnx").is_file()
    torch_teacher, _ = load_model_dir(elsewhere["root"] / "models/teachers/cnn")
    views = load_tensors(tmp_path / "data/transfer/views.safetensors")
    logits = load_tensors(tmp_path / "data/transfer/teacher_logits.safetensors")["logits"]
    first = views["src"][::2]  # view 0 of each sample is the sample itself
    images = prepared_tensors(tmp_path / "data/prepared", "transfer")["x"][first]
    with torch.no_grad():
        assert torch.allclose(logits[::2], torch_teacher(images), atol=1e-4)
    summary = json.loads((tmp_path / "metrics/summary.json").read_text())
    assert summary["teacher"]["accuracy"] == pytest.approx(elsewhere["accuracy"], abs=1e-6)
    graph = onnx.load(str(elsewhere["onnx"])).graph
    weights = sum(int(torch.tensor(t.dims).prod()) for t in graph.initializer)
    assert summary["teacher"]["params"] == weights > 0  # the ONNX file's weights (BatchNorm folded by the export)
    assert summary["teacher"]["size_bytes"] == elsewhere["onnx"].stat().st_size


def test_what_needs_layers_or_gradients_refuses_an_onnx_teacher(elsewhere: dict, tmp_path: Path) -> None:
    raw = project_with(tmp_path, {"onnx": str(elsewhere["onnx"])})
    raw["distill"]["terms"] = [{"name": "hint", "student_layers": ["features.1"], "teacher_layers": ["head.2"]}]
    with pytest.raises(ConfigError, match="hint reads layers of teacher 'given', an ONNX model run as a black box"):
        parse_params(raw)
    raw = project_with(tmp_path, {"onnx": str(elsewhere["onnx"])})
    raw["transfer"]["source"] = "synthetic"
    with pytest.raises(ConfigError, match="synth.method=inversion needs the gradients of teacher 'given'"):
        parse_params(raw)
    raw["synth"] = {"method": "noise"}
    parse_params(raw)  # noise needs only the teacher's outputs


def test_bad_teacher_files_fail_with_one_line(elsewhere: dict, tmp_path: Path) -> None:
    from safetensors.torch import load_file, save_file

    not_safetensors = tmp_path / "teacher.pt"
    torch.save({"w": torch.zeros(2)}, not_safetensors)
    other = {**CNN, "channels": [4, 8]}
    weights = load_file(str(elsewhere["weights"]))
    first = sorted(weights)[0]
    weights[first] = torch.full_like(weights[first], float("nan"))
    save_file(weights, str(tmp_path / "nan.safetensors"))
    model, _ = load_model_dir(elsewhere["root"] / "models/teachers/cnn")
    with torch.no_grad():
        model.head[-1].bias.fill_(float("nan"))  # every output NaN
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(model, (torch.zeros(2, 1, 8, 8),), str(tmp_path / "nan.onnx"), dynamo=False,
                          input_names=["x"], output_names=["logits"], dynamic_axes={"x": {0: "n"}})  # fmt: skip
    cases = [
        ({"model": CNN, "pretrained": str(tmp_path / "nan.safetensors")}, f"not finite (NaN or inf) in {first}"),
        ({"onnx": str(tmp_path / "nan.onnx")}, "gives outputs that are not finite (NaN or inf) on 300 of 300"),
        ({"model": CNN, "pretrained": str(not_safetensors)}, "is not a safetensors file"),
        ({"model": other, "pretrained": str(elsewhere["weights"])}, "does not fit model 'cnn'"),
        ({"model": CNN, "pretrained": str(tmp_path / "nowhere.safetensors")}, "nowhere.safetensors: teachers.given"),
        ({"onnx": str(not_safetensors)}, "not a loadable ONNX model"),
    ]
    get_stage("prepare")(parse_params(project_with(tmp_path, cases[0][0])))
    for teacher, expected in cases:
        with pytest.raises(DataError) as info:
            get_stage("train_teacher")(parse_params(project_with(tmp_path, teacher)))
        assert expected in str(info.value) and "\n" not in str(info.value)
    with pytest.raises(ConfigError, match="a pretrained teacher is used as it is, not trained: remove `train`"):
        parse_params(project_with(tmp_path, {"model": CNN, "pretrained": "x", "train": {"epochs": 1}}))
    with pytest.raises(ConfigError, match="an onnx teacher is used as it is: remove model"):
        parse_params(project_with(tmp_path, {"model": CNN, "onnx": "x.onnx"}))
