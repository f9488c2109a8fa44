"""From params `search.space` to Optuna suggestions and back to a student model spec."""

from __future__ import annotations

import json
from typing import Any

from kdcore.config.search import SearchSpace, int_range


def families(space: SearchSpace) -> list[str]:
    """The families to search, in a fixed order: builtin ones, then each torchvision classifier."""
    names = [name for name in ("mlp", "cnn") if getattr(space, name) is not None]
    return names + [f"torchvision:{name}" for name in space.torchvision]


def _int(trial, name: str, values: list[int]) -> int:
    low, high, step = int_range(values)
    return trial.suggest_int(name, low, high, step=step)


def suggest(trial, space: SearchSpace) -> dict[str, Any]:
    """A student model spec (what `student.model` holds) drawn by `trial` from `space`. Parameters that only
    some architectures have are named per position (`mlp_width_2` exists only for depth 2 or more), which
    Optuna's samplers treat as conditional."""
    choices = families(space)
    family = trial.suggest_categorical("family", choices) if len(choices) > 1 else choices[0]
    if family == "mlp":
        depth = _int(trial, "mlp_depth", space.mlp.depth)
        return {"name": "mlp", "hidden": [_int(trial, f"mlp_width_{i + 1}", space.mlp.width) for i in range(depth)]}
    if family == "cnn":
        cnn = space.cnn
        blocks = _int(trial, "cnn_blocks", cnn.blocks)
        spec = {
            "name": "cnn",
            "channels": [_int(trial, f"cnn_channels_{i + 1}", cnn.channels) for i in range(blocks)],
            "hidden": _int(trial, "cnn_hidden", cnn.hidden),
        }
        if len(cnn.kernel) > 1 or cnn.kernel[0] != 3:
            spec["kernel"] = trial.suggest_categorical("cnn_kernel", list(cnn.kernel))
        spec["batchnorm"] = (
            trial.suggest_categorical("cnn_batchnorm", list(cnn.batchnorm))
            if len(cnn.batchnorm) > 1
            else cnn.batchnorm[0]
        )
        return spec
    return {"name": family.split(":", 1)[1]}


def arch_key(spec: dict[str, Any]) -> str:
    """One string per architecture: trials that drew the same one share its training."""
    return json.dumps(spec, sort_keys=True)


def describe(spec: dict[str, Any]) -> str:
    """A short name: mlp 64-32, cnn 8-16 k5 h32, mobilenet_v3_small."""
    if spec["name"] == "mlp":
        return "mlp " + "-".join(map(str, spec["hidden"]))
    if spec["name"] == "cnn":
        kernel = f" k{spec['kernel']}" if spec.get("kernel", 3) != 3 else ""
        norm = "" if spec.get("batchnorm", True) else " nobn"
        return f"cnn {'-'.join(map(str, spec['channels']))}{kernel} h{spec['hidden']}{norm}"
    return spec["name"]
