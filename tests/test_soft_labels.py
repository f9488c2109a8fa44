"""The top-K teacher-output cache: what it stores, how the full distribution is rebuilt, and the stages on it."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F

from kdcore.artifacts import load_tensors
from kdcore.checkpoint import load_model_dir
from kdcore.errors import ConfigError
from kdcore.losses.hinton import kd_divergence
from kdcore.stages import get_stage
from kdcore.stages.check_params import check_against_data
from kdcore.transfer import soft_labels
from kdcore.transfer.pool import load_view_set
from kdcore.transfer.soft_labels import SoftLabels, SoftLabelWriter, rebuild, top_k
from tests.conftest import copy_run


def random_logits(rows: int = 64, classes: int = 10, seed: int = 0) -> torch.Tensor:
    return torch.randn(rows, classes, generator=torch.Generator().manual_seed(seed)) * 3


def test_top_k_keeps_the_largest_probabilities_largest_first() -> None:
    logits = random_logits()
    logp, index = top_k(logits, 3)
    prob = logp.double().exp()
    assert logp.dtype == torch.float16 and index.dtype == torch.int16 and prob.shape == (64, 3)
    exact = F.softmax(logits.double(), 1)
    assert torch.equal(index.long(), exact.topk(3, dim=1).indices)
    assert torch.allclose(prob, exact.topk(3, dim=1).values, rtol=1e-2)
    assert (prob[:, :-1] >= prob[:, 1:]).all()


def test_every_class_kept_rebuilds_the_teachers_tempered_distribution() -> None:
    logits = random_logits()
    logp, index = top_k(logits, 10)
    for rest in ("spread", "renormalize"):
        rebuilt = rebuild(logp, index, 10, rest)
        for t in (1.0, 4.0):
            assert torch.allclose(F.softmax(rebuilt / t, 1), F.softmax(logits / t, 1), atol=2e-3)


def test_spread_shares_the_left_mass_equally_and_renormalize_gives_the_rest_none() -> None:
    logits = random_logits()
    logp, index = top_k(logits, 2)
    prob = logp.double().exp()
    spread = rebuild(logp, index, 10, "spread").exp()
    assert torch.allclose(spread.sum(1), torch.ones(64), atol=1e-5)
    kept = spread.gather(1, index.long())
    assert torch.allclose(kept, (prob / prob.sum(1, keepdim=True).clamp_min(1)).float(), atol=1e-5)
    others = spread.scatter(1, index.long(), float("nan"))
    left = (1 - kept.sum(1, keepdim=True)) / 8
    assert torch.allclose(others[~others.isnan()].view(64, 8), left.expand(-1, 8), atol=1e-6)

    renormalized = rebuild(logp, index, 10, "renormalize")
    assert torch.allclose(renormalized.exp().sum(1), torch.ones(64), atol=1e-5)
    assert (renormalized.exp().scatter(1, index.long(), 0.0) == 0).all()
    student = torch.randn(64, 10, requires_grad=True)
    loss = kd_divergence(student, renormalized, 4.0)  # finite: the absent classes are a large negative, not -inf
    loss.backward()
    assert torch.isfinite(loss) and torch.isfinite(student.grad).all()


def test_shards_read_back_by_rows_as_they_were_written(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(soft_labels, "SHARD_BYTES", 4 * 3 * 50)  # 50 views a shard
    logits = random_logits(rows=237)
    writer = SoftLabelWriter(tmp_path / "labels", 3, 10)
    for first in range(0, 237, 40):  # chunks that do not line up with the shards
        writer.add(*top_k(logits[first : first + 40], 3))
    assert writer.close() == 237 and len(list((tmp_path / "labels").glob("shard-*"))) == 5
    whole = SoftLabels(tmp_path / "labels")
    monkeypatch.setattr(soft_labels, "IN_MEMORY_BYTES", 0)
    by_rows = SoftLabels(tmp_path / "labels")
    assert whole._whole is not None and by_rows._whole is None
    index = torch.randperm(237, generator=torch.Generator().manual_seed(1))[:90]
    expected = rebuild(*top_k(logits[index], 3), 10)
    assert torch.equal(whole[index], expected) and torch.equal(by_rows[index], expected)
    assert whole.shape == (237, 10)


def test_build_transfer_and_distill_on_a_top_k_cache(tiny_run: Path, tmp_path: Path) -> None:
    exact = load_tensors(tiny_run / "data/transfer/teacher_logits.safetensors")["logits"]
    params = copy_run(tiny_run, tmp_path, transfer__cache_topk=3)
    get_stage("build_transfer")(params)
    transfer = tmp_path / "data/transfer"
    assert not (transfer / "teacher_logits.safetensors").exists()
    stored = SoftLabels(transfer / "soft_labels")
    _, index = stored.stored(slice(None))
    assert len(stored) == len(exact) == 800 and stored.k == 3
    assert torch.equal(index.long(), F.softmax(exact, 1).topk(3, dim=1).indices)  # the same teacher, the same views
    summary = json.loads((transfer / "summary.json").read_text())
    assert summary["cache_topk"] == 3 and summary["soft_label_bytes_per_view"] == 12
    view_set, _ = load_view_set(transfer, tmp_path / "data/prepared", tmp_path / "data/synthetic/images.safetensors")
    assert torch.equal(view_set.batch(torch.arange(5), torch.Generator())["teacher_logits"], stored[torch.arange(5)])

    first = [p.read_bytes() for p in sorted((transfer / "soft_labels").iterdir())]
    get_stage("build_transfer")(params)  # the same params: the same bytes
    assert first == [p.read_bytes() for p in sorted((transfer / "soft_labels").iterdir())]

    get_stage("distill")(params)
    model, _ = load_model_dir(tmp_path / "models/student_kd")
    assert sum(p.numel() for p in model.parameters()) > 0
    back = copy_run(tiny_run, tmp_path)  # and back to the exact cache: one form of soft labels at a time
    get_stage("build_transfer")(back)
    assert (transfer / "teacher_logits.safetensors").is_file() and not (transfer / "soft_labels").exists()


def test_more_kept_classes_than_the_data_has_is_refused(tmp_path: Path, tiny_run: Path) -> None:
    params = copy_run(tiny_run, tmp_path, transfer__cache_topk=11)
    with pytest.raises(ConfigError, match=r"transfer.cache_topk: 11 is more than the data's 10 classes"):
        check_against_data(params)
