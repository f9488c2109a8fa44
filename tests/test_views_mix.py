"""Mixup / cutmix views: the shifts stay those of an unmixed set, the mixing is exact, and teacher and
student see the same mixed input."""

from __future__ import annotations

import json
from pathlib import Path

import torch

from kdcore.artifacts import load_tensors
from kdcore.checkpoint import load_model_dir
from kdcore.config import parse_params
from kdcore.data.prepared import load_split
from kdcore.inference import predict_logits
from kdcore.stages import get_stage
from kdcore.transfer.views import Views, make_views
from tests.conftest import tiny_raw

FILL = torch.tensor([0.0])


def test_mixing_keeps_the_shifts_and_never_mixes_a_first_view() -> None:
    plain = make_views(50, 8, 2, seed=3)
    mixed = make_views(50, 8, 2, seed=3, mix="both", mix_share=0.5, image_hw=(8, 8))
    for a, b in ((plain.src, mixed.src), (plain.dx, mixed.dx), (plain.dy, mixed.dy)):
        assert torch.equal(a, b)
    partner = mixed.mix.partner
    assert partner[::8].eq(-1).all()
    share = float((partner >= 0).float().sum() / (len(partner) - 50))
    assert 0.4 < share < 0.6
    cut = mixed.mix.box[:, 1] > mixed.mix.box[:, 0]
    assert cut.any() and (partner[cut] >= 0).all() and mixed.mix.lam[cut].eq(1.0).all()  # cutmix does not blend
    blended = (partner >= 0) & ~cut
    assert blended.any() and ((mixed.mix.lam[blended] > 0) & (mixed.mix.lam[blended] < 1)).all()


def test_rendered_views_are_exact_mixup_and_cutmix() -> None:
    images = torch.randn(6, 1, 8, 8, generator=torch.Generator().manual_seed(0))
    views = make_views(6, 10, 0, seed=1, mix="both", mix_share=1.0, image_hw=(8, 8))
    x = views.render(images, torch.arange(len(views.src)), FILL)
    for v in range(len(views.src)):
        a, p = images[views.src[v]], views.mix.partner[v]
        if p < 0:
            assert torch.equal(x[v], a)
            continue
        y0, y1, x0, x1 = views.mix.box[v].tolist()
        if y1 > y0:
            inside = torch.zeros(8, 8, dtype=torch.bool)
            inside[y0:y1, x0:x1] = True
            assert torch.equal(x[v][:, inside], images[p][:, inside])
            assert torch.equal(x[v][:, ~inside], a[:, ~inside])
        else:
            lam = views.mix.lam[v]
            assert torch.allclose(x[v], lam * a + (1 - lam) * images[p], atol=1e-6)
    assert torch.equal(Views.from_tensors(views.as_tensors()).render(images, slice(0, 60), FILL), x)


def test_mixed_views_through_build_transfer_and_distill(tmp_path: Path) -> None:
    raw = tiny_raw(tmp_path)
    raw["transfer"].update(views=4, mix="mixup", mix_share=0.5)
    params = parse_params(raw)
    for stage in ("prepare", "train_teacher", "build_transfer", "distill"):
        get_stage(stage)(params)
    stored = load_tensors(tmp_path / "data/transfer/views.safetensors")
    views = Views.from_tensors(stored)
    mixed = views.mix.partner >= 0
    assert mixed.any() and stored["y"][mixed].eq(-1).all() and stored["y"][~mixed].ge(0).all()
    summary = json.loads((tmp_path / "data/transfer/summary.json").read_text())
    assert summary["mixed_views"] == int(mixed.sum())
    # the stored soft labels are the teacher's outputs on exactly the mixed images
    teacher, _ = load_model_dir(tmp_path / "models/teachers/cnn")
    images = load_split(tmp_path / "data/prepared", "transfer").x
    fill = torch.tensor(json.loads((tmp_path / "data/prepared/meta.json").read_text())["fill"])
    logits = load_tensors(tmp_path / "data/transfer/teacher_logits.safetensors")["logits"]
    some = mixed.nonzero().flatten()[:20]
    assert torch.allclose(logits[some], predict_logits(teacher, views.render(images, some, fill)), atol=1e-5)
    assert (tmp_path / "models/student_kd/model.safetensors").is_file()
