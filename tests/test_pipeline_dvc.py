"""The real pipeline under DVC in a temporary git repo: repro, change one parameter, repro again."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import yaml

from tests.conftest import ROOT, copy_repo
from tests.projects import sh

pytestmark = pytest.mark.slow


@pytest.fixture
def repo(tiny_repo: Path, tmp_path: Path) -> Path:
    """A copy of the shared project: `dvc repro` ran every stage once, and the results are committed."""
    return copy_repo(tiny_repo, tmp_path / "kdflow-repo")


def test_repro_change_one_param_and_diff(repo: Path) -> None:
    lock = yaml.safe_load((repo / "dvc.lock").read_text())["stages"]
    stages = (
        "prepare",
        "train_teacher@cnn",
        "train_teacher@mlp",
        "synthesize",
        "build_transfer",
        "distill",
        "train_student_scratch",
    )
    assert set(lock) == {"check_params", *stages, "export", "quantize", "evaluate", "update", "search_student"}
    assert "Data and pipelines are up to date" in sh(repo, "dvc", "status").stdout
    summary = json.loads((repo / "metrics/summary.json").read_text())
    shipped = {f"student_kd_{kind}" for kind in ("onnx", "int8", "int8_pt2e", "int4")}  # QAT off: repo_raw()
    assert set(summary) == {"teacher", "teacher/cnn", "teacher/mlp", "student_scratch", "student_kd", "transfer_set",
                            *shipped}  # fmt: skip
    assert "`student_kd_int4`: int4 weights PTQ" in (repo / "reports/report.md").read_text()
    assert "ensemble (mean of 2)" in (repo / "reports/report.md").read_text()
    # DVC owns the large outputs: git holds the metrics and the .gitignore entries, never the files
    tracked = sh(repo, "git", "ls-files").stdout
    assert "metrics/summary.json" in tracked and "dvc.lock" in tracked
    assert ".safetensors" not in tracked and "manifest.csv" not in tracked, tracked

    raw = yaml.safe_load((repo / "params.yaml").read_text())
    raw["distill"]["temperature"] = 2.0
    (repo / "params.yaml").write_text(yaml.safe_dump(raw, sort_keys=False))
    second = sh(repo, "dvc", "repro")
    for stage in (
        "prepare",
        "train_teacher@cnn",
        "train_teacher@mlp",
        "synthesize",
        "build_transfer",
        "train_student_scratch",
    ):
        assert f"Stage '{stage}' didn't change, skipping" in second.stdout, second.stdout
    assert "Running stage 'distill'" in second.stdout and "Running stage 'evaluate'" in second.stdout

    diff = json.loads(sh(repo, "dvc", "metrics", "diff", "--json").stdout)
    changed = diff["metrics/summary.json"]
    assert any(key.startswith("student_kd.") for key in changed), changed
    assert "teacher.accuracy" not in changed and "student_scratch.accuracy" not in changed
    params_diff = json.loads(sh(repo, "dvc", "params", "diff", "--json").stdout)
    temperature = params_diff["params.yaml"]["distill.temperature"]
    assert (temperature["old"], temperature["new"]) == (4.0, 2.0)

    noop = sh(repo, "dvc", "repro")
    assert "Running stage" not in noop.stdout

    good = (repo / "params.yaml").read_text()
    for bad in ({"student": {**raw["student"], "train": {**raw["student"]["train"], "epoch": 30}}}, {"foo": 1}):
        (repo / "params.yaml").write_text(yaml.safe_dump({**raw, **bad}, sort_keys=False))
        failed = sh(repo, "dvc", "repro", check=False)
        assert failed.returncode != 0
        assert "student.train.epoch: unknown key" in failed.stderr or "foo: unknown key" in failed.stderr
        assert "Running stage 'check_params'" in failed.stdout and "Running stage 'distill'" not in failed.stdout
        assert (repo / "models/student_kd/model.safetensors").is_file()  # nothing removed
        assert (repo / "dvclive/student_kd/metrics.json").is_file()
    # data no classifier can learn stops at prepare, whose earlier output DVC keeps (persist) as do the stages after
    np.savez(repo / "one_class.npz", x=np.zeros((1100, 8, 8), np.uint8), y=np.zeros(1100, np.int64))
    (repo / "params.yaml").write_text(
        yaml.safe_dump({**raw, "data": {**raw["data"], "source": "npz", "path": "one_class.npz"}}, sort_keys=False)
    )
    failed = sh(repo, "dvc", "repro", check=False)
    assert failed.returncode != 0 and "kdflow prepare: error: data.path one_class.npz: only one class" in failed.stderr
    meta = json.loads((repo / "data/prepared/meta.json").read_text())
    assert meta["source"] == "digits" and (repo / "models/student_kd/model.safetensors").is_file()
    (repo / "one_class.npz").unlink()
    (repo / "params.yaml").write_text(good)
    assert "Running stage 'prepare'" not in sh(repo, "dvc", "repro", "prepare").stdout  # back to the committed data

    raw["quantize"] = {**raw["quantize"], "low_bit": {"bits": 3, "group": 0}}  # only the quantized files change
    (repo / "params.yaml").write_text(yaml.safe_dump(raw, sort_keys=False))
    third = sh(repo, "dvc", "repro").stdout
    assert "Running stage 'quantize'" in third and "Running stage 'evaluate'" in third
    for stage in ("distill", "train_student_scratch", "export"):
        assert f"Stage '{stage}' didn't change, skipping" in third, third


def test_changing_one_teacher_retrains_only_that_teacher(repo: Path) -> None:
    raw = yaml.safe_load((repo / "params.yaml").read_text())
    raw["teachers"]["mlp"]["subset"] = 0.6
    (repo / "params.yaml").write_text(yaml.safe_dump(raw, sort_keys=False))
    plan = sh(repo, "dvc", "repro", "--dry").stdout  # what DVC would rerun; what follows the teachers is tested above
    assert "Stage 'train_teacher@cnn' didn't change, skipping" in plan
    assert "Stage 'train_student_scratch' didn't change, skipping" in plan  # the baseline needs no teacher
    for stage in ("train_teacher@mlp", "build_transfer", "distill", "evaluate"):
        assert f"Running stage '{stage}'" in plan
    cnn = (repo / "models/teachers/cnn/model.safetensors").read_bytes()
    run = sh(repo, "dvc", "repro", "train_teacher@cnn", "train_teacher@mlp").stdout
    assert "Stage 'train_teacher@cnn' didn't change, skipping" in run and "Running stage 'train_teacher@mlp'" in run
    assert (repo / "models/teachers/cnn/model.safetensors").read_bytes() == cnn
    model = json.loads((repo / "models/teachers/mlp/model.json").read_text())
    assert model["config"]["train_samples"] == 240  # 60% of 400


def test_push_then_pull_into_a_second_clone_gives_the_same_models(repo: Path, tmp_path: Path) -> None:
    """The project's DVC remote (.dvc/config, pointed at a team directory as a team would point it at S3):
    one clone pushes, another pulls, and has every model and metric without running a stage."""
    sh(repo, "dvc", "repro")
    shutil.copy(ROOT / ".dvc" / "config", repo / ".dvc" / "config")  # the shipped remote settings
    storage = tmp_path / "team-storage"
    sh(repo, "dvc", "remote", "modify", "storage", "url", str(storage))
    sh(repo, "git", "add", "-A")
    sh(repo, "git", "commit", "-qm", "results, and the team's remote")
    pushed = sh(repo, "dvc", "push")
    assert "pushed" in pushed.stdout, pushed.stdout

    clone = tmp_path / "teammate"
    sh(tmp_path, "git", "clone", "-q", str(repo), str(clone))
    assert not (clone / "models/student_kd/model.safetensors").exists()
    sh(clone, "dvc", "pull")
    status = sh(clone, "dvc", "status")
    assert "up to date" in status.stdout, status.stdout  # nothing to rerun
    for path in ("models/student_kd/model.safetensors", "models/teachers/cnn/model.safetensors",
                 "data/transfer/teacher_logits.safetensors", "metrics/summary.json"):  # fmt: skip
        assert (clone / path).read_bytes() == (repo / path).read_bytes(), path
    assert "Running stage" not in sh(clone, "dvc", "repro").stdout
