"""Model files and resumable training checkpoints.

A model directory holds `model.safetensors` (weights, no pickle) and `model.json` (the architecture
spec, input shape, classes, seed) so it can be rebuilt without the params that made it.
A training checkpoint holds the weights and `state-<epoch>.pt` (optimizer, schedule, RNG, epoch, metric
history; loaded with `weights_only=True`) of its last finished epoch, and the fingerprint of the run that
wrote it: a checkpoint resumes only the same run (same config, same data).
"""

from __future__ import annotations

import hashlib
import json
import shutil
import sys
from pathlib import Path
from typing import Any

import torch
from pydantic import TypeAdapter
from safetensors.torch import load_model, save_model
from torch import nn

from kdcore.artifacts import read_json, save_with, write_json
from kdcore.config import ModelSpec
from kdcore.errors import DataError
from kdcore.models import build_model

WEIGHTS = "model.safetensors"
ONNX = "model.onnx"  # a teacher trained elsewhere, given as ONNX
META = "model.json"


def weights_file(model_dir: Path) -> Path:
    """The file that holds a model directory's weights: model.onnx for an ONNX teacher, else model.safetensors."""
    onnx = Path(model_dir) / ONNX
    return onnx if onnx.is_file() else Path(model_dir) / WEIGHTS


def save_model_dir(
    out_dir: Path, model: nn.Module, spec: Any, input_shape: tuple[int, int, int], num_classes: int, **meta: Any
) -> Path:
    """Writes weights and metadata atomically; returns the weights path."""
    out_dir.mkdir(parents=True, exist_ok=True)
    save_with(out_dir / WEIGHTS, lambda tmp: save_model(model, str(tmp)))
    write_json(
        out_dir / META,
        {"spec": spec.model_dump(mode="json"), "input_shape": list(input_shape), "num_classes": num_classes, **meta},
    )
    return out_dir / WEIGHTS


def load_model_dir(model_dir: Path, device: torch.device | str = "cpu") -> tuple[nn.Module, dict[str, Any]]:
    """Rebuilds the model a model directory describes and loads its weights, in eval mode."""
    model_dir = Path(model_dir)
    for path in (weights_file(model_dir), model_dir / META):
        if not path.is_file():
            raise DataError(f"{path}: missing; run the stage that trains this model first")
    rerun = "rerun the stage that writes it (dvc repro -f <stage>) or restore it (dvc checkout)"
    try:
        meta = read_json(model_dir / META)
    except (ValueError, UnicodeDecodeError) as err:
        raise DataError(f"{model_dir / META}: not readable JSON ({err}); {rerun}") from None
    if weights_file(model_dir).name == ONNX:
        from kdcore.models.onnx import OnnxModel

        return OnnxModel(model_dir / ONNX).eval(), meta
    try:
        spec = TypeAdapter(ModelSpec).validate_python(meta["spec"], strict=False)
        model = build_model(spec, tuple(meta["input_shape"]), meta["num_classes"])
    except (KeyError, TypeError, ValueError) as err:
        raise DataError(
            f"{model_dir / META}: does not describe a model ({type(err).__name__}: {err}); {rerun}"
        ) from None
    try:
        load_model(model, str(model_dir / WEIGHTS), device="cpu")
    except Exception as err:  # safetensors' own error types, or weights of another shape
        first = " ".join(str(err).split())[:200]
        raise DataError(f"{model_dir / WEIGHTS}: not loadable weights for this model ({first}); {rerun}") from None
    return model.to(device).eval(), meta


def fingerprint(*parts: Any) -> str:
    """A hash of the config sections and input hashes a training run depends on."""
    payload = json.dumps([p.model_dump(mode="json") if hasattr(p, "model_dump") else p for p in parts], sort_keys=True)
    return hashlib.sha256(payload.encode()).hexdigest()


def training_checkpoint(work: Path, stage: str, seed: int, *parts: Any) -> TrainingCheckpoint:
    """The resume checkpoint of one training run of `stage`, under `work`/checkpoints/, keyed by
    everything the run depends on, the number of training processes included (kdcore/distributed.py)."""
    from kdcore.distributed import world_size

    if world_size() > 1:
        parts = (*parts, {"world_size": world_size()})
    return TrainingCheckpoint(Path(work) / "checkpoints" / stage, fingerprint(stage, seed, *parts))


class TrainingCheckpoint:
    """The last finished epoch of one training run, kept under `directory` until the run completes."""

    def __init__(self, directory: Path, fingerprint: str) -> None:
        self.directory = Path(directory)
        self.fingerprint = fingerprint

    def files(self, epoch: int) -> tuple[Path, Path]:
        """The weights and the state of the checkpoint after `epoch`: named by their epoch, so a run killed
        while it writes the next one's still finds a matching pair."""
        return self.directory / f"model-{epoch}.safetensors", self.directory / f"state-{epoch}.pt"

    def save(self, model: nn.Module, state: dict[str, Any]) -> None:
        self.directory.mkdir(parents=True, exist_ok=True)
        weights, state_file = self.files(state["epoch"])
        save_with(weights, lambda tmp: save_model(model, str(tmp)))
        save_with(state_file, lambda tmp: torch.save(state, tmp))
        # written last: it names the epoch whose two files are whole; a checkpoint without a matching
        # fingerprint is never resumed
        write_json(self.directory / "fingerprint.json", {"fingerprint": self.fingerprint, "epoch": state["epoch"]})
        for old in self.directory.iterdir():
            if old.name.startswith(("model-", "state-")) and old not in (weights, state_file):
                old.unlink(missing_ok=True)

    def load(self, model: nn.Module) -> dict[str, Any] | None:
        """The saved state if this run's checkpoint exists (loading its weights into `model`), else None."""
        marker = self.directory / "fingerprint.json"
        if not marker.is_file():
            return None
        try:
            saved = json.loads(marker.read_text())
            if saved.get("fingerprint") != self.fingerprint:
                return None
            weights, state_file = self.files(int(saved["epoch"]))
            state = torch.load(state_file, weights_only=True)
            if state.get("epoch") != saved.get("epoch"):
                return None
            load_model(model, str(weights), device="cpu")
        except Exception as err:  # noqa: BLE001 - pickle, safetensors, torch, JSON: any damage means start over
            self.set_aside(f"{type(err).__name__}: {err}")
            return None
        return state

    def set_aside(self, reason: str) -> Path:
        """Moves a damaged checkpoint to `<directory>.damaged` (replacing an earlier one) so the next
        run starts clean instead of failing on it again; warns with the reason."""
        aside = self.directory.with_name(self.directory.name + ".damaged")
        shutil.rmtree(aside, ignore_errors=True)
        self.directory.rename(aside)
        reason = " ".join(reason.split())[:200]
        print(f"warning: damaged checkpoint moved to {aside} ({reason}); training starts over", file=sys.stderr)
        return aside

    def clear(self) -> None:
        shutil.rmtree(self.directory, ignore_errors=True)
