"""The quantize stage: torchao PT2E int8 (static, dynamic, QAT) and packed low-bit weights."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import torch
from torch import nn

from kdcore.artifacts import sha256_file
from kdcore.config import parse_params
from kdcore.errors import DataError
from kdcore.inference import predict_logits
from kdcore.models.onnx import OnnxModel
from kdcore.quantize.lowbit import _pack, _unpack, load_packed, ptq_lowbit, qat_lowbit, save_packed
from kdcore.quantize.onnx_export import export_onnx
from kdcore.quantize.pt2e import Lowered, ptq_int8, qat_int8
from kdcore.stages import get_stage
from tests.conftest import bare_onnxruntime_accuracy, copy_run, tiny_raw


def tiny_mlp() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(nn.Flatten(), nn.Linear(64, 32), nn.ReLU(), nn.Linear(32, 10)).eval()


def tiny_cnn() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(
        nn.Conv2d(1, 4, 3, padding=1), nn.BatchNorm2d(4), nn.ReLU(), nn.Flatten(), nn.Linear(256, 10)
    ).eval()


def trainer(x: torch.Tensor, y: torch.Tensor, steps: int = 5):
    """A QAT `train(module)`: a few Adam steps of cross-entropy on (x, y)."""

    def train(module: nn.Module) -> None:
        module.train()
        optimizer = torch.optim.Adam(module.parameters(), lr=1e-3)
        for _ in range(steps):
            loss = nn.functional.cross_entropy(module(x), y)
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()

    return train


def images(n: int = 96) -> torch.Tensor:
    return torch.randn(n, 1, 8, 8, generator=torch.Generator().manual_seed(1))


@pytest.mark.parametrize("make", [tiny_mlp, tiny_cnn])
def test_static_int8_onnx_is_smaller_close_and_the_same_bytes_twice(make, tmp_path: Path) -> None:
    model, x = make(), images()
    files = []
    for run in range(2):
        converted = ptq_int8(model, x, what="tiny")
        files.append(tmp_path / f"int8_{run}.onnx")
        export_onnx(converted, (1, 8, 8), files[-1])
    export_onnx(model, (1, 8, 8), tmp_path / "fp32.onnx")
    assert sha256_file(files[0]) == sha256_file(files[1])
    assert files[0].stat().st_size < (tmp_path / "fp32.onnx").stat().st_size
    shipped = predict_logits(OnnxModel(files[0]), x)
    reference = predict_logits(model, x)
    assert shipped.shape == (96, 10)
    assert float((shipped.argmax(1) == reference.argmax(1)).float().mean()) > 0.9
    compiled = Lowered(converted, x[:32])  # another batch size is padded to the compiled one
    assert torch.allclose(predict_logits(compiled, x[:5]), predict_logits(compiled, x[:32])[:5])


def test_dynamic_int8_of_an_mlp_and_its_refusal_of_a_conv(tmp_path: Path) -> None:
    x = images()
    converted = ptq_int8(tiny_mlp(), x, dynamic=True, what="tiny")
    assert predict_logits(converted, x).shape == (96, 10)
    with pytest.raises(DataError, match=r"layer '0' \(Conv2d\)"):
        ptq_int8(tiny_cnn(), x, dynamic=True, what="tiny")


def test_a_layer_the_quantizer_cannot_handle_is_named() -> None:
    model = nn.Sequential(nn.Flatten(), nn.Linear(64, 16), nn.PReLU(), nn.Linear(16, 10))
    with pytest.raises(DataError, match=r"quantize tiny: layer '2' \(PReLU\) has weights the quantizer cannot"):
        ptq_int8(model, images(), what="tiny")
    with pytest.raises(DataError, match="no calibration images"):
        ptq_int8(tiny_mlp(), images(0), what="tiny")


def test_int8_qat_trains_through_fake_quantization_deterministically() -> None:
    x = images()
    y = predict_logits(tiny_mlp(), x).argmax(1)
    outs = []
    for _ in range(2):
        torch.manual_seed(0)
        converted = qat_int8(tiny_mlp(), x, trainer(x, y), what="tiny")
        outs.append(predict_logits(converted, x))
    assert outs[0].shape == (96, 10) and torch.equal(outs[0], outs[1])


@pytest.mark.parametrize("bits", [2, 3, 4, 5, 6, 7])
def test_pack_round_trip(bits: int) -> None:
    q = torch.randint(-(1 << (bits - 1)), 1 << (bits - 1), (37,), generator=torch.Generator().manual_seed(bits))
    packed = _pack(q.numpy(), bits)
    assert len(packed) == -(-37 * bits // 8)
    assert (torch.from_numpy(_unpack(packed, bits, 37)) == q).all()


@pytest.mark.parametrize("group", [0, 16])
def test_low_bit_weights_are_packed_and_load_to_the_same_model(group: int, tmp_path: Path) -> None:
    model, x = tiny_mlp(), images()
    quantized = ptq_lowbit(model, 3, group, "tiny")
    save_packed(quantized, 3, group, tmp_path / "int3.safetensors")
    loaded = load_packed(tiny_mlp(), tmp_path / "int3.safetensors")
    assert torch.allclose(predict_logits(loaded, x), predict_logits(quantized, x), atol=1e-5)
    weight = loaded[1].weight.detach()  # 3 bits: at most 8 distinct values per scale group
    rows = weight.reshape(32, -1, 16 if group else 64)
    assert all(len(torch.unique(r)) <= 8 for r in rows.reshape(-1, rows.shape[-1]))
    fp32_bytes = sum(p.numel() * 4 for p in model.parameters())
    assert (tmp_path / "int3.safetensors").stat().st_size < 0.5 * fp32_bytes
    with pytest.raises(DataError, match=r"layer '1' has 64 inputs, not a multiple of quantize.low_bit.group = 24"):
        ptq_lowbit(model, 4, 24, "tiny")


def test_low_bit_qat_ends_on_the_grid() -> None:
    x = images()
    y = predict_logits(tiny_mlp(), x).argmax(1)
    trained = qat_lowbit(tiny_mlp(), 2, 0, trainer(x, y), "tiny")
    assert hasattr(trained[1].weight, "qdata")
    assert int(trained[1].weight.qdata.abs().max()) <= 2


@pytest.fixture(scope="module")
def trained(tiny_run: Path, tmp_path_factory: pytest.TempPathFactory):
    """A copy of the tiny pipeline's run, its quantize stage set to every kind of file."""
    root = tmp_path_factory.mktemp("quantize")
    raw = tiny_raw(root)
    raw["quantize"] = {"calibration_samples": 128, "dynamic_int8": True, "low_bit": {"bits": 3}}
    params = copy_run(tiny_run, root, raw)
    shutil.rmtree(params.paths.quantized)  # as DVC removes a stage's outputs before it runs
    return params


def test_quantize_stage_writes_every_file_and_its_row(trained) -> None:
    get_stage("quantize")(trained)
    rows = json.loads((trained.paths.metrics / "quantize.json").read_text())
    kinds = ("int8_pt2e", "int8_qat", "int8_dynamic", "int3", "int3_qat")
    assert set(rows) == {f"student_kd_{k}" for k in kinds}
    timings = json.loads((trained.paths.metrics / "timings" / "quantize.json").read_text())
    assert set(timings) == set(rows)
    for name, row in rows.items():
        assert {"accuracy", "nll", "ece", "agreement", "agreement_fp32", "size_bytes"} <= set(row)
        assert (trained.paths.quantized.parent / row["file"]).is_file(), row["file"]  # the file the row scores
        assert "latency_ms_b256" in timings[name] and not any(k.startswith("latency") for k in row)
        assert row["agreement_fp32"] > 0.8, name
    assert "accuracy_torch" in rows["student_kd_int8_qat"]
    assert rows["student_kd_int8_pt2e"]["file"] == "quantized/student_kd/int8_ptq.onnx"
    assert {"latency_torch_ms_b1", "latency_torch_ms_b256"} <= set(timings["student_kd_int8_qat"])
    files = sorted(p.name for p in (trained.paths.quantized / "student_kd").iterdir())
    assert files == ["int3.safetensors", "int3_qat.safetensors", "int8_dynamic.onnx", "int8_ptq.onnx", "int8_qat.onnx"]
    for name, file in (
        ("int8_pt2e", "int8_ptq.onnx"),
        ("int8_qat", "int8_qat.onnx"),
        ("int8_dynamic", "int8_dynamic.onnx"),
    ):
        shipped = trained.paths.quantized / "student_kd" / file  # scored as a deployment would, from raw pixels
        assert bare_onnxruntime_accuracy(shipped, trained.paths.prepared) == pytest.approx(
            rows[f"student_kd_{name}"]["accuracy"], abs=1e-6
        )
    hashes = {f: sha256_file(trained.paths.quantized / "student_kd" / f) for f in files}
    metrics_hash = sha256_file(trained.paths.metrics / "quantize.json")
    get_stage("quantize")(trained)  # same inputs, same bytes
    assert hashes == {f: sha256_file(trained.paths.quantized / "student_kd" / f) for f in files}
    assert sha256_file(trained.paths.metrics / "quantize.json") == metrics_hash


def test_qat_with_hard_labels_names_its_rows(trained) -> None:
    raw = json.loads(trained.model_dump_json())
    raw["quantize"].update(int8=False, dynamic_int8=False)
    raw["quantize"]["qat"]["targets"] = "labels"
    params = parse_params(raw)
    get_stage("quantize")(params)
    rows = json.loads((params.paths.metrics / "quantize.json").read_text())
    assert set(rows) == {"student_kd_int8_qat_labels", "student_kd_int3", "student_kd_int3_qat_labels"}


def test_importing_torchao_prints_no_deprecation_notice() -> None:
    """torch's notice about torchao's Enum registration is not the user's to act on: quantize runs stay quiet."""
    import subprocess
    import sys

    code = "import kdcore.quantize.pt2e, kdcore.quantize.lowbit; import torchao.quantization.qat; " + (
        "from torchao.quantization.pt2e.quantizer import x86_inductor_quantizer"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr[-2000:]
    assert "register_constant" not in result.stderr and "deprecated" not in result.stderr, result.stderr
