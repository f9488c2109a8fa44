"""What several stages share: the run fingerprint that guards resume, and the checkpoint location."""

from __future__ import annotations

import hashlib
import json
from typing import Any

from kdcore.checkpoint import TrainingCheckpoint
from kdcore.config import Params


def fingerprint(*parts: Any) -> str:
    """A hash of the config sections and input hashes a training run depends on."""
    payload = json.dumps([p.model_dump(mode="json") if hasattr(p, "model_dump") else p for p in parts], sort_keys=True)
    return hashlib.sha256(payload.encode()).hexdigest()


def training_checkpoint(params: Params, stage: str, *parts: Any) -> TrainingCheckpoint:
    return TrainingCheckpoint(params.paths.work / "checkpoints" / stage, fingerprint(stage, params.seed, *parts))
