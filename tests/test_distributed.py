"""Training under torchrun: 2 CPU processes (gloo) on tiny data, rank 0 writing, resuming after a kill."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pytest
import torch
import yaml

from kdcore import distributed
from kdcore.config import parse_params
from kdcore.config.params import DistributedConfig
from kdcore.errors import ConfigError
from kdcore.stages import get_stage
from tests.conftest import ROOT, tiny_raw

pytestmark = pytest.mark.skipif(not torch.distributed.is_available(), reason="torch built without distributed")


def stage_command(stage: str, params: Path) -> list[str]:
    return [sys.executable, "-m", "kdcore", stage, "--params", str(params)]


def environment() -> dict[str, str]:
    return {**os.environ, "PYTHONPATH": str(ROOT), "TQDM_DISABLE": "1", "OMP_NUM_THREADS": "1"}


def run_stage(stage: str, params: Path) -> subprocess.CompletedProcess:
    result = subprocess.run(stage_command(stage, params), cwd=ROOT, env=environment(), capture_output=True, text=True)
    assert result.returncode == 0, result.stderr[-3000:]
    return result


def project(root: Path, processes: int, **teacher_train: object) -> Path:
    """Tiny params rooted at `root` with `processes` training processes; the data prepared once."""
    raw = tiny_raw(root)
    raw["teachers"]["cnn"]["train"].update(teacher_train)
    if not (root / "data/prepared/meta.json").is_file():
        get_stage("prepare")(parse_params(raw))
    raw["distributed"] = {"nproc_per_node": processes}
    path = root / f"params{processes}.yaml"
    path.write_text(yaml.safe_dump(raw))
    return path


def test_the_parts_of_a_batch_tile_it_and_weigh_to_its_mean(monkeypatch: pytest.MonkeyPatch) -> None:
    values = torch.randn(13, dtype=torch.float64)
    for world, batch in [(2, 13), (3, 13), (4, 2)]:
        monkeypatch.setattr(distributed, "world_size", lambda world=world: world)
        parts, averaged = [], 0.0
        for r in range(world):
            monkeypatch.setattr(distributed, "rank", lambda r=r: r)
            part, scale = distributed.part_of_batch(batch)
            parts.append((part, scale))
            averaged += scale * float(values[:batch][part].mean()) / world  # what DDP's mean of the ranks gives
        covered = [i for part, scale in parts if scale for i in range(batch)[part]]
        assert covered == list(range(batch))
        assert averaged == pytest.approx(float(values[:batch].mean()))


def test_two_processes_train_the_same_model_twice_and_only_rank_zero_writes(tmp_path: Path) -> None:
    params = project(tmp_path, 2)
    leftovers = set(Path(tempfile.gettempdir()).glob("kdflow-rank*"))
    result = run_stage("train_teacher", params)
    assert "2 processes" in result.stderr and "torch.distributed.run" in result.stderr
    model = tmp_path / "models/teachers/cnn/model.safetensors"
    first = model.read_bytes()
    rows = (tmp_path / "dvclive/teachers/cnn/plots/metrics/eval/accuracy.tsv").read_text().splitlines()
    assert len(rows) == 1 + 6  # a header and one row per epoch: one writer
    assert set(Path(tempfile.gettempdir()).glob("kdflow-rank*")) == leftovers  # the other rank's scratch is gone
    assert sorted(p.name for p in tmp_path.joinpath("models/teachers").iterdir()) == ["cnn"]  # no staging left

    run_stage("train_teacher", params)
    assert model.read_bytes() == first  # the same params and world size: the same bytes
    accuracy_2 = json.loads((tmp_path / "models/teachers/cnn/model.json").read_text())

    single = project(tmp_path, 1)
    run_stage("train_teacher", single)
    assert model.read_bytes() != first  # another world size: BatchNorm sees half batches
    assert accuracy_2["num_classes"] == 10

    get_stage("build_transfer")(parse_params(yaml.safe_load(single.read_text())))
    result = run_stage("distill", params)
    assert "2 processes" in result.stderr
    assert (tmp_path / "models/student_kd/model.safetensors").is_file()


def test_more_cuda_processes_than_gpus_is_refused_before_launch() -> None:
    cfg = DistributedConfig(nproc_per_node=2)
    with pytest.raises(ConfigError, match=r"distributed.nproc_per_node: 2 processes .* has 1 CUDA device"):
        distributed.check_devices(cfg, torch.device("cuda"), gpus=1)
    distributed.check_devices(cfg, torch.device("cuda"), gpus=2)
    distributed.check_devices(cfg, torch.device("cpu"), gpus=0)  # gloo processes need no GPU


def test_a_run_killed_on_every_rank_resumes_where_it_stopped(tmp_path: Path) -> None:
    params = project(tmp_path / "killed", 2, epochs=40)
    fingerprint = tmp_path / "killed/.kdflow/checkpoints/train_teacher@cnn/fingerprint.json"
    process = subprocess.Popen(
        stage_command("train_teacher", params), cwd=ROOT, env=environment(), start_new_session=True,
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )  # fmt: skip
    deadline = time.monotonic() + 120
    while not fingerprint.is_file() and process.poll() is None and time.monotonic() < deadline:
        time.sleep(0.02)
    os.killpg(process.pid, signal.SIGKILL)  # torchrun and both ranks
    process.wait()
    assert fingerprint.is_file(), "no epoch finished before the kill"
    stopped_after = json.loads(fingerprint.read_text())["epoch"]
    assert stopped_after < 39, "the run finished before it could be killed"
    assert not (tmp_path / "killed/models/teachers/cnn").exists()

    resumed = run_stage("train_teacher", params)
    assert f"resuming after epoch {stopped_after + 1} of 40" in resumed.stderr

    whole = project(tmp_path / "whole", 2, epochs=40)
    run_stage("train_teacher", whole)
    weights = "models/teachers/cnn/model.safetensors"
    assert (tmp_path / "killed" / weights).read_bytes() == (tmp_path / "whole" / weights).read_bytes()
