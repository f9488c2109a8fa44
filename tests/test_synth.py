"""Data-free synthesis: every method on a tiny teacher, determinism, budget, resume, checks, and the
synthetic transfer set through the stages with no real split on disk."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import torch
import yaml
from torch import nn

from kdcore.artifacts import load_tensors, sha256_file
from kdcore.checkpoint import load_model_dir
from kdcore.config import parse_params
from kdcore.errors import ConfigError, ValidationFailed
from kdcore.stages import get_stage
from kdcore.synth import SYNTHESIZERS, PixelBounds, SynthContext
from kdcore.synth.checks import mean_pairwise_distance
from kdcore.synth.pool import synthesize_pool
from kdcore.synth.priors import BatchNormStats
from kdcore.transfer.pool import synthetic_count
from tests.conftest import ROOT, tiny_raw

LOOSE_CHECKS = {"min_class_share": 0.0, "min_mean_confidence": 0.0, "min_diversity": 0.0}


def synth_raw(root: Path, method: str, **synth: object) -> dict:
    raw = tiny_raw(root)
    raw["transfer"].update(source="synthetic", min_mean_confidence=0.0)
    raw["distill"]["terms"] = [{"name": "kd", "weight": 1.0}]
    raw["synth"] = {"method": method, "images": 64, "batch_size": 32, "steps": 6, "checks": LOOSE_CHECKS, **synth}
    return raw


@pytest.fixture(scope="module")
def trained(tiny_run: Path) -> Path:
    """A project directory with the tiny data prepared and the tiny CNN teacher trained (read only)."""
    return tiny_run


def copy_project(trained: Path, dest: Path, real_splits: bool = True) -> Path:
    shutil.copytree(trained / "data/prepared", dest / "data/prepared")
    shutil.copytree(trained / "models", dest / "models")
    if not real_splits:
        for split in ("teacher_train", "transfer", "test", "validation"):
            shutil.rmtree(dest / "data/prepared" / split)
    return dest


@pytest.mark.parametrize("method", ["noise", "inversion", "generator"])
def test_each_method_makes_its_budget_deterministically_without_real_data(
    method: str, trained: Path, tmp_path: Path
) -> None:
    hashes = []
    for run in ("a", "b"):
        root = copy_project(trained, tmp_path / run, real_splits=False)
        get_stage("synthesize")(parse_params(synth_raw(root, method)))
        pool = load_tensors(root / "data/synthetic/images.safetensors")
        assert pool["x"].shape == (64, 1, 8, 8) and torch.isfinite(pool["x"]).all()
        hashes.append(sha256_file(root / "data/synthetic/images.safetensors"))
        hashes.append(sha256_file(root / "metrics/synthesis.json"))  # computed figures only: the same bytes
        assert json.loads((root / "metrics/timings/synthesis.json").read_text())["seconds"] >= 0
        summary = json.loads((root / "data/synthetic/summary.json").read_text())
        assert summary["method"] == method and summary["images"] == 64 and len(summary["class_shares"]) == 10
        assert (root / "plots/synthetic_samples.png").read_bytes()[:4] == b"\x89PNG"
        assert "checks passed" in (root / "reports/validation/synthesize.html").read_text()
        assert not (root / ".kdflow/synth").exists() or not any((root / ".kdflow/synth").iterdir())
    assert hashes[:2] == hashes[2:]


def tiny_context(trained: Path) -> SynthContext:
    teacher, _ = load_model_dir(trained / "models/teachers/cnn")
    for p in teacher.parameters():
        p.requires_grad_(False)
    meta = json.loads((trained / "data/prepared/meta.json").read_text())
    bounds = PixelBounds.from_stats(meta["mean"], meta["std"])

    def proxy_student() -> nn.Module:
        torch.manual_seed(0)
        return nn.Sequential(nn.Flatten(), nn.Linear(64, 10))

    return SynthContext(teacher, (1, 8, 8), 10, bounds, torch.device("cpu"), proxy_student)


def test_inversion_runs_exactly_its_steps_and_lowers_its_loss(trained: Path) -> None:
    ctx = tiny_context(trained)
    calls = []
    handle = ctx.teacher.register_forward_hook(lambda *args: calls.append(1))
    cfg = parse_params(synth_raw(trained, "inversion", steps=40, images=32, batch_size=32)).synth
    synthesizer = SYNTHESIZERS.get("inversion")(ctx, cfg)
    generator = torch.Generator().manual_seed(0)
    start = ctx.bounds.clamp(torch.randn((32, 1, 8, 8), generator=torch.Generator().manual_seed(0)))
    targets = torch.arange(32) % 10
    before = sum(synthesizer.loss_parts(start, targets, torch.Generator().manual_seed(1)).values()).item()
    calls.clear()
    images, made_for = synthesizer.block(0, generator, lambda n: None)
    handle.remove()
    assert len(calls) == 40  # one teacher pass per step, nothing else
    after = sum(synthesizer.loss_parts(images, made_for, torch.Generator().manual_seed(1)).values()).item()
    assert after < 0.5 * before
    assert torch.equal(made_for, targets)  # balanced target classes
    low, high = ctx.bounds.low.item(), ctx.bounds.high.item()
    assert images.min() >= low - 1e-6 and images.max() <= high + 1e-6


class Killed(Exception):
    pass


def test_a_killed_synthesis_resumes_to_the_same_pool(trained: Path, tmp_path: Path) -> None:
    ctx = tiny_context(trained)
    cfg = parse_params(synth_raw(trained, "inversion", disagreement_weight=1.0, proxy_steps=3)).synth
    whole = synthesize_pool(SYNTHESIZERS.get("inversion")(ctx, cfg), 4, 0, tmp_path / "a", "f" * 64, 0, 6)

    synthesizer = SYNTHESIZERS.get("inversion")(ctx, cfg)
    real_block = synthesizer.block

    def dies_at_block_2(index, generator, tick):
        if index == 2:
            raise Killed
        return real_block(index, generator, tick)

    synthesizer.block = dies_at_block_2
    with pytest.raises(Killed):
        synthesize_pool(synthesizer, 4, 0, tmp_path / "b", "f" * 64, 0, 6)
    resumed = synthesize_pool(SYNTHESIZERS.get("inversion")(ctx, cfg), 4, 0, tmp_path / "b", "f" * 64, 0, 6)
    assert resumed.resumed_blocks == 2
    assert torch.equal(resumed.images, whole.images)  # the proxy student's state came back with the blocks


def test_a_degenerate_pool_stops_the_stage_with_one_line(trained: Path, tmp_path: Path) -> None:
    root = copy_project(trained, tmp_path)
    raw = synth_raw(root, "noise", init_std=0.01)  # near-constant images: the teacher calls them all one class
    raw["synth"]["checks"] = {"min_class_share": 0.02, "min_mean_confidence": 0.0, "min_diversity": 0.0}
    with pytest.raises(ValidationFailed) as info:
        get_stage("synthesize")(parse_params(raw))
    message = str(info.value)
    assert "\n" not in message and "column=share" in message and "synthesize.html" in message
    assert "FAIL" in (root / "reports/validation/synthesize.html").read_text()


def test_inversion_refuses_a_teacher_without_batchnorm(trained: Path, tmp_path: Path) -> None:
    root = copy_project(trained, tmp_path)
    raw = synth_raw(root, "inversion")
    raw["teachers"]["mlp"] = {"model": {"name": "mlp", "hidden": [16]}, "train": {"epochs": 1, "batch_size": 64}}
    raw["synth"]["teacher"] = "mlp"
    params = parse_params(raw)
    get_stage("train_teacher")(params, teacher="mlp")
    with pytest.raises(ConfigError, match="no BatchNorm2d layer; set synth.bn_weight: 0"):
        get_stage("synthesize")(params)


def test_synth_config_errors_name_the_key(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="synth: .*multiple of synth.batch_size"):
        parse_params(synth_raw(tmp_path, "inversion", images=100, batch_size=32))
    with pytest.raises(ConfigError, match="synth.teacher 'big' is not in teachers"):
        parse_params(synth_raw(tmp_path, "inversion", teacher="big"))
    with pytest.raises(ConfigError, match="synth.method"):
        parse_params(synth_raw(tmp_path, "gan"))


def test_batchnorm_distance_is_zero_at_the_running_statistics() -> None:
    torch.manual_seed(0)
    bn = nn.BatchNorm2d(3).eval()
    x = torch.randn(16, 3, 5, 5) * 2 + 1
    bn.running_mean.copy_(x.mean((0, 2, 3)))
    bn.running_var.copy_(x.var((0, 2, 3), unbiased=False))
    stats = BatchNormStats(nn.Sequential(bn), "test")
    bn(x)
    assert stats.loss(first_weight=5.0).item() < 1e-5
    stats.clear()
    bn(x + 1)
    assert stats.loss(first_weight=5.0).item() > 1.0


def test_diversity_separates_copies_from_distinct_images() -> None:
    distinct = torch.randn(20, 1, 4, 4, generator=torch.Generator().manual_seed(0))
    copies = distinct[:1].repeat(20, 1, 1, 1)
    assert mean_pairwise_distance(copies).max().item() == 0.0
    assert mean_pairwise_distance(distinct).mean().item() > 1.0  # about sqrt(2) for unit-variance pixels


def test_mixed_share_arithmetic() -> None:
    assert synthetic_count(available=4096, real=1000, share=0.5) == 1000
    assert synthetic_count(available=4096, real=1000, share=0.8) == 4000
    assert synthetic_count(available=500, real=1000, share=0.8) == 500


def test_synthetic_and_mixed_transfer_sets_through_the_stages(trained: Path, tmp_path: Path) -> None:
    root = copy_project(trained, tmp_path / "syn")
    params = parse_params(synth_raw(root, "inversion"))
    for stage in ("synthesize", "build_transfer", "distill", "train_student_scratch", "evaluate"):
        get_stage(stage)(params)
    summary = json.loads((root / "metrics/summary.json").read_text())
    assert summary["transfer_set"]["real_samples"] == 0 and summary["transfer_set"]["synthetic_samples"] == 64
    views = load_tensors(root / "data/transfer/views.safetensors")
    assert len(views["src"]) == 128 and views["y"].eq(-1).all()  # no hard label reaches the distilled student
    report = (root / "reports/report.md").read_text()
    assert "64 synthetic (`inversion`, never a real image)" in report and "synthetic_samples.png" in report

    mixed = tmp_path / "mixed"
    raw = synth_raw(copy_project(trained, mixed), "inversion")
    raw["transfer"].update(source="mixed", synthetic_share=0.1)
    params = parse_params(raw)
    get_stage("synthesize")(params)
    get_stage("build_transfer")(params)
    transfer = json.loads((mixed / "data/transfer/summary.json").read_text())
    assert (transfer["real_samples"], transfer["synthetic_samples"]) == (400, 44)  # 400 * 0.1 / 0.9


def test_the_synthesize_stage_depends_on_no_real_split() -> None:
    stage = yaml.safe_load((ROOT / "dvc.yaml").read_text())["stages"]["synthesize"]
    data_deps = [d for d in stage["deps"] if d.startswith("${paths.")]
    # the params marker (check_params) holds no data: a constant line
    assert data_deps == ["${paths.work}/params_ok.json", "${paths.prepared}/meta.json", "${paths.teachers}"]


def test_class_filters_leave_out_and_cap_classes(trained: Path, tmp_path: Path) -> None:
    root = copy_project(trained, tmp_path)
    raw = synth_raw(root, "inversion")
    raw["transfer"].update(source="mixed", synthetic_share=0.5, exclude_classes=[3, 7], max_per_class=20)
    params = parse_params(raw)
    get_stage("synthesize")(params)
    get_stage("build_transfer")(params)
    transfer = json.loads((root / "data/transfer/summary.json").read_text())
    assert transfer["real_samples"] == 8 * 20  # 8 classes left, 20 of each
    views = load_tensors(root / "data/transfer/views.safetensors")
    real_labels = views["y"][views["y"] >= 0]
    assert not torch.isin(real_labels, torch.tensor([3, 7])).any()
    assert torch.bincount(real_labels, minlength=10).max() <= 20 * 2  # two views of each sample
    pool = load_tensors(root / "data/synthetic/images.safetensors")
    kept = pool["predicted"][~torch.isin(pool["predicted"], torch.tensor([3, 7]))]
    assert transfer["synthetic_samples"] == min(len(kept), 160)  # synthetic by the teacher's prediction

    raw["transfer"]["exclude_classes"] = ["eleven"]
    with pytest.raises(ConfigError, match="transfer.exclude_classes: unknown class 'eleven'; classes: 0, 1"):
        get_stage("build_transfer")(parse_params(raw))
