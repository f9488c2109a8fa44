"""The GPU options (params `gpu`): off on the CPU unless asked for; asked for, they still train."""

from __future__ import annotations

from pathlib import Path

import torch

from kdcore.checkpoint import load_model_dir
from kdcore.config import GpuConfig
from kdcore.data.prepared import load_split
from kdcore.inference import predict_logits
from kdcore.runtime import Accel, accel, configure
from kdcore.stages import get_stage
from tests.conftest import copy_run


def test_auto_leaves_the_cpu_exact() -> None:
    assert configure(GpuConfig(), torch.device("cpu")) == Accel()
    forced = configure(GpuConfig(amp="bf16", channels_last="on", compile=True), torch.device("cpu"))
    assert forced.amp == torch.bfloat16 and forced.channels_last and forced.compile
    configure(GpuConfig(), torch.device("cpu"))
    assert accel() == Accel()


def test_bf16_channels_last_training_runs_through_the_stage(tiny_run: Path, tmp_path: Path) -> None:
    params = copy_run(tiny_run, tmp_path, gpu__amp="bf16", gpu__channels_last="on")
    get_stage("train_teacher")(params)
    model, _ = load_model_dir(tmp_path / "models/teachers/cnn")
    reference, _ = load_model_dir(tiny_run / "models/teachers/cnn")
    test = load_split(tmp_path / "data/prepared", "test")
    accuracy = float((predict_logits(model, test.x).argmax(1) == test.y).float().mean())
    exact = float((predict_logits(reference, test.x).argmax(1) == test.y).float().mean())
    assert accuracy > 0.5 and abs(accuracy - exact) < 0.15  # bf16 trains about as well as float32
    weights = dict(model.named_parameters())
    assert any(not torch.equal(p, weights[name]) for name, p in reference.named_parameters())  # really in bf16


def test_compiled_training_gives_a_trained_model(tiny_run: Path, tmp_path: Path) -> None:
    params = copy_run(
        tiny_run, tmp_path, gpu__compile=True, student__train__epochs=1, student__train__batch_size=40
    )  # 800 views: 20 batches of one shape, one compilation
    get_stage("train_student_scratch")(params)
    model, _ = load_model_dir(tmp_path / "models/student_scratch")
    assert all(torch.isfinite(p).all() for p in model.parameters())
