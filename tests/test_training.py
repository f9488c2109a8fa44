"""The training loop: deterministic on CPU, and a run killed mid-way resumes to the same weights."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import pytest
import torch

from kdcore.checkpoint import TrainingCheckpoint
from kdcore.config import MLPSpec, TrainConfig
from kdcore.losses import LOSSES
from kdcore.models import build_model
from kdcore.runtime import seed_everything
from kdcore.training import ImageSet, fit

CFG = TrainConfig(epochs=4, batch_size=16, lr=0.01, optimizer="adam", schedule="cosine")


def data() -> ImageSet:
    g = torch.Generator().manual_seed(0)
    y = torch.arange(80) % 4
    x = torch.randn(80, 1, 6, 6, generator=g) + (y.float() - 1.5).view(-1, 1, 1, 1)  # separable classes
    return ImageSet(x, y, fill=torch.tensor([0.0]), shift=1)


def fresh_model() -> torch.nn.Module:
    seed_everything(0)
    return build_model(MLPSpec(name="mlp", hidden=[12], dropout=0.2), (1, 6, 6), 4)


def train(checkpoint: TrainingCheckpoint | None = None, train_set=None, live_dir: Path | None = None):
    model = fresh_model()
    history = fit(
        model,
        train_set or data(),
        LOSSES.get("ce"),
        CFG,
        seed=0,
        device=torch.device("cpu"),
        checkpoint=checkpoint,
        live_dir=live_dir,
    )
    return model, history


def weights(model: torch.nn.Module) -> list[torch.Tensor]:
    return [p.detach().clone() for p in model.state_dict().values()]


def test_same_seed_same_weights() -> None:
    a, hist_a = train()
    b, hist_b = train()
    assert all(torch.equal(p, q) for p, q in zip(weights(a), weights(b), strict=True))
    assert [h["train/loss"] for h in hist_a] == [h["train/loss"] for h in hist_b]
    assert hist_a[-1]["train/loss"] < hist_a[0]["train/loss"]


@dataclass
class Killed(ImageSet):
    """Raises once `fail_at` batches have been drawn: a stage killed mid-epoch."""

    fail_at: int = 0
    drawn: int = 0

    def batch(self, idx, generator):
        self.drawn += 1
        if self.drawn > self.fail_at:
            raise KeyboardInterrupt
        return super().batch(idx, generator)


def test_killed_run_resumes_to_identical_weights(tmp_path: Path) -> None:
    uninterrupted, full_history = train()
    base = data()
    killed = Killed(base.x, base.y, base.fill, base.shift, fail_at=5 * 2 + 3)  # in epoch 3 of 4
    checkpoint = TrainingCheckpoint(tmp_path / "ckpt", fingerprint="run-a")
    with pytest.raises(KeyboardInterrupt):
        train(checkpoint, killed)
    assert (tmp_path / "ckpt" / "fingerprint.json").is_file()

    resumed, history = train(checkpoint, live_dir=tmp_path / "live")
    assert all(torch.equal(p, q) for p, q in zip(weights(uninterrupted), weights(resumed), strict=True))
    assert [h["train/loss"] for h in history] == [h["train/loss"] for h in full_history]
    # the dvclive history holds every epoch, the replayed ones too
    tsv = (tmp_path / "live" / "plots" / "metrics" / "train" / "loss.tsv").read_text().splitlines()
    assert len(tsv) == 1 + CFG.epochs
    # wall-clock seconds stay out of the logs, which are then the same bytes as an uninterrupted run's
    assert not (tmp_path / "live" / "plots" / "metrics" / "seconds.tsv").exists()


def test_checkpoint_of_another_run_is_ignored(tmp_path: Path) -> None:
    base = data()
    with pytest.raises(KeyboardInterrupt):
        train(TrainingCheckpoint(tmp_path, "run-a"), Killed(base.x, base.y, base.fill, base.shift, fail_at=7))
    other = TrainingCheckpoint(tmp_path, "run-b")
    assert other.load(fresh_model()) is None
    uninterrupted, _ = train()
    fresh, _ = train(other)
    assert all(torch.equal(p, q) for p, q in zip(weights(uninterrupted), weights(fresh), strict=True))


@pytest.mark.parametrize("damage", ["state-*.pt", "model-*.safetensors", "fingerprint.json"])
def test_damaged_checkpoint_is_set_aside_and_training_starts_over(tmp_path: Path, damage: str, capsys) -> None:
    base = data()
    checkpoint = TrainingCheckpoint(tmp_path / "ckpt", fingerprint="run-a")
    with pytest.raises(KeyboardInterrupt):
        train(checkpoint, Killed(base.x, base.y, base.fill, base.shift, fail_at=7))
    if damage == "fingerprint.json":
        (tmp_path / "ckpt" / damage).write_text('{"fingerprint": "ru')  # cut off mid-write
    else:
        (damaged,) = (tmp_path / "ckpt").glob(damage)  # the last epoch's file
        damaged.write_bytes(b"\x80\x04garbage")  # pickle protocol header, then junk
    uninterrupted, _ = train()
    resumed, _ = train(checkpoint)
    assert all(torch.equal(p, q) for p, q in zip(weights(uninterrupted), weights(resumed), strict=True))
    assert "damaged checkpoint moved to" in capsys.readouterr().err
    assert (tmp_path / "ckpt.damaged").is_dir()  # kept for a look, out of the way of the next run


def test_a_kill_between_the_weights_and_the_state_resumes_the_last_whole_epoch(tmp_path: Path) -> None:
    from safetensors.torch import save_model

    checkpoint = TrainingCheckpoint(tmp_path / "ckpt", fingerprint="run-a")
    first, second = fresh_model(), fresh_model()
    with torch.no_grad():
        for p in second.parameters():
            p.add_(1.0)
    checkpoint.save(first, {"epoch": 0})
    weights_of_next, _ = checkpoint.files(1)
    save_model(second, str(weights_of_next))  # killed here: epoch 1's state and fingerprint never written
    loaded = fresh_model()
    with torch.no_grad():
        for p in loaded.parameters():
            p.zero_()
    assert checkpoint.load(loaded) == {"epoch": 0}
    assert all(torch.equal(p, q) for p, q in zip(weights(loaded), weights(first), strict=True))
