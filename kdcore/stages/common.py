"""What several stages share: the run fingerprint that guards resume, the checkpoint location, and the
checks of settings against the kind of data."""

from __future__ import annotations

import hashlib
import json
from typing import Any

from kdcore.artifacts import write_json
from kdcore.checkpoint import TrainingCheckpoint
from kdcore.config import Params
from kdcore.errors import ConfigError


def fingerprint(*parts: Any) -> str:
    """A hash of the config sections and input hashes a training run depends on."""
    payload = json.dumps([p.model_dump(mode="json") if hasattr(p, "model_dump") else p for p in parts], sort_keys=True)
    return hashlib.sha256(payload.encode()).hexdigest()


def training_checkpoint(params: Params, stage: str, *parts: Any) -> TrainingCheckpoint:
    return TrainingCheckpoint(params.paths.work / "checkpoints" / stage, fingerprint(stage, params.seed, *parts))


def check_settings_for_kind(params: Params, kind: str) -> None:
    """Vectors have no pixels: shifts and cutmix would move or cut features, so they must be off."""
    if kind != "vector":
        return
    wrong = [
        f"teachers.{name}.train.shift" for name, t in params.teachers.items() if t.train is not None and t.train.shift
    ]
    if params.transfer.shift and params.transfer.views > 1:
        wrong.append("transfer.shift")
    if params.transfer.mix in ("cutmix", "both"):
        wrong.append("transfer.mix (cutmix)")
    if wrong:
        raise ConfigError(
            f"data.path {params.data.path} holds (N, D) vectors, which have no pixels to shift or cut: "
            f"set {', '.join(wrong)} to 0 / none (mixup views work for vectors)"
        )


def write_training_time(params: Params, name: str, histories: list[list[dict[str, float]]]) -> None:
    """metrics/timings/<name>.json: the wall-clock seconds of a training (every generation, resumed
    epochs included). Measured times live apart from what a run computes, which is byte-identical
    across identical runs."""
    epochs = [record.get("seconds", 0.0) for history in histories for record in history]
    write_json(
        params.paths.metrics / "timings" / f"{name}.json",
        {"train_seconds": round(sum(epochs), 2), "epochs": len(epochs)},
    )
