"""Vector data (an .npz whose x is (N, D)) end to end with MLPs: per-feature normalisation, no pixel
checks, mixup views, synthesis within the features' range, and a clear error for pixel-only settings."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from kdcore.artifacts import load_tensors
from kdcore.config import parse_params
from kdcore.errors import ConfigError
from kdcore.stages import STAGE_NAMES, get_stage
from tests.conftest import prepared_tensors, tiny_raw


def vector_raw(root: Path) -> dict:
    rng = np.random.default_rng(0)
    centres = rng.normal(0, 3, (3, 12))
    y = np.arange(900) % 3
    x = (centres[y] + rng.normal(0, 1.0, (900, 12))) * np.linspace(0.5, 20, 12)  # features of very different scales
    np.savez(root / "vectors.npz", x=x.astype(np.float32) + 100.0, y=y)
    raw = tiny_raw(root, data__source="npz", data__path=str(root / "vectors.npz"))
    raw["data"]["splits"] = {"teacher_train": 300, "transfer": 300, "test": 200}
    raw["teachers"]["cnn"] = {
        "model": {"name": "mlp", "hidden": [32]},
        "train": {"epochs": 10, "batch_size": 32, "lr": 0.01},
    }
    raw["transfer"].update(views=4, shift=0, mix="mixup", mix_share=0.5)
    raw["student"]["model"] = {"name": "mlp", "hidden": [8]}
    return raw


def test_vector_data_end_to_end(tmp_path: Path) -> None:
    params = parse_params(vector_raw(tmp_path))
    for stage in STAGE_NAMES:
        get_stage(stage)(params)
    meta = json.loads((tmp_path / "data/prepared/meta.json").read_text())
    assert meta["kind"] == "vector" and meta["input_shape"] == [12, 1, 1]
    train = prepared_tensors(tmp_path / "data/prepared", "teacher_train")["x"]
    assert torch.allclose(train.mean(dim=(0, 2, 3)), torch.zeros(12), atol=1e-4)  # standardised per feature
    assert torch.allclose(train.std(dim=(0, 2, 3)), torch.ones(12), atol=1e-2)
    summary = json.loads((tmp_path / "metrics/summary.json").read_text())
    assert summary["teacher"]["accuracy"] > 0.8 and summary["student_kd"]["accuracy"] > 0.6
    transfer = json.loads((tmp_path / "data/transfer/summary.json").read_text())
    assert transfer["mixed_views"] > 0


def test_synthetic_vectors_stay_in_the_features_range(tmp_path: Path) -> None:
    raw = vector_raw(tmp_path)
    raw["transfer"].update(source="synthetic", mix="none", min_mean_confidence=0.0)
    raw["distill"]["terms"] = [{"name": "kd", "weight": 1.0}]
    raw["synth"] = {"method": "generator", "images": 64, "batch_size": 32, "steps": 30, "bn_weight": 0.0,
                    "checks": {"min_class_share": 0.0, "min_mean_confidence": 0.0, "min_diversity": 0.0}}  # fmt: skip
    params = parse_params(raw)
    for stage in ("prepare", "train_teacher", "synthesize", "build_transfer", "distill"):
        get_stage(stage)(params)
    meta = json.loads((tmp_path / "data/prepared/meta.json").read_text())
    pool = load_tensors(tmp_path / "data/synthetic/images.safetensors")["x"]
    assert pool.shape == (64, 12, 1, 1)
    low, high = torch.tensor(meta["bounds"]["low"]), torch.tensor(meta["bounds"]["high"])
    flat = pool.flatten(1)
    assert (flat >= low - 1e-5).all() and (flat <= high + 1e-5).all()
    assert (tmp_path / "plots/synthetic_samples.png").read_bytes()[:4] == b"\x89PNG"


def test_pixel_settings_on_vectors_stop_prepare(tmp_path: Path) -> None:
    raw = vector_raw(tmp_path)
    raw["teachers"]["cnn"]["train"]["shift"] = 2
    raw["transfer"].update(shift=2, mix="cutmix")
    with pytest.raises(ConfigError) as info:
        get_stage("prepare")(parse_params(raw))
    message = str(info.value)
    assert "(N, D) vectors" in message and "teachers.cnn.train.shift" in message and "transfer.shift" in message
    assert "transfer.mix (cutmix)" in message and not (tmp_path / "data/prepared").exists()


def test_check_params_refuses_what_prepare_would(tmp_path: Path, capsys) -> None:
    """Settings the data rules out stop `check_params` (the stage DVC runs first, and `kdflow check`),
    before DVC removes any output: decided from the data's labels and header, never its pixels."""
    from flows.kdflow import main
    from tests.conftest import write_params

    raw = vector_raw(tmp_path)
    raw["teachers"]["cnn"]["train"]["shift"] = 2  # the default shift, meaningless for vectors
    write_params(tmp_path / "params.yaml", raw)
    assert main(["check", "--params", str(tmp_path / "params.yaml")]) == 2
    line = capsys.readouterr().err.strip()
    assert len(line.splitlines()) == 1 and "(N, D) vectors" in line and "teachers.cnn.train.shift" in line, line
    raw = vector_raw(tmp_path)
    raw["data"]["splits"]["validation"] = 500  # more than the 100 samples the other splits leave
    write_params(tmp_path / "params.yaml", raw)
    assert main(["check", "--params", str(tmp_path / "params.yaml")]) == 2
    line = capsys.readouterr().err.strip()
    assert line == "kdflow check: error: data.splits: sizes sum to 1300 but the data holds only 900 samples", line
    assert sorted(p.name for p in tmp_path.iterdir()) == ["params.yaml", "vectors.npz"]
