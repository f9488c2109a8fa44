"""Low-bit weights (2 to 7 bits) of the Linear layers, through torchao, stored packed.

Weights are quantized symmetrically, one scale per output row (group 0) or per `group` consecutive
input weights: w ~= s * q with q an integer in [-2^(b-1), 2^(b-1) - 1]. PTQ rounds the trained
weights (torchao `IntxWeightOnlyConfig`); QAT trains through the same rounding with fake quantizers
(torchao `QATConfig`, straight-through gradients; Jacob et al. 2018) and converts at the end.
Activations stay fp32: weight-only quantization saves size, not arithmetic. Conv layers keep fp32
weights (torchao's low-bit weight configs cover Linear layers).

The shipped file is a safetensors file: per quantized layer, q packed b bits at a time (`.qweight`,
uint8) and its scales (`.scale`, fp32); every other tensor as it is. `load_packed` rebuilds the
model with the dequantized weights s * q, the exact values the quantized model computes with.
"""

from __future__ import annotations

import copy
import json
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch
from torch import nn

from kdcore.artifacts import save_tensors
from kdcore.errors import DataError


def _base_config(bits: int, group: int):
    from torchao.quantization import IntxWeightOnlyConfig
    from torchao.quantization.granularity import PerAxis, PerGroup

    return IntxWeightOnlyConfig(
        weight_dtype=getattr(torch, f"int{bits}"), granularity=PerGroup(group) if group else PerAxis(0)
    )


def check_groups(model: nn.Module, group: int, what: str) -> None:
    for name, module in model.named_modules():
        if isinstance(module, nn.Linear) and group and module.in_features % group:
            raise DataError(
                f"quantize {what}: layer {name!r} has {module.in_features} inputs, not a multiple of "
                f"quantize.low_bit.group = {group}"
            )
    if not any(isinstance(m, nn.Linear) for m in model.modules()):
        raise DataError(f"quantize {what}: low-bit weights need a Linear layer; the model has none")


def ptq_lowbit(model: nn.Module, bits: int, group: int, what: str = "model") -> nn.Module:
    """A copy of `model` with its Linear weights rounded to `bits` bits."""
    from torchao.quantization import quantize_

    check_groups(model, group, what)
    quantized = copy.deepcopy(model).cpu().eval()
    quantize_(quantized, _base_config(bits, group))
    return quantized


def qat_lowbit(
    model: nn.Module, bits: int, group: int, train: Callable[[nn.Module], None], what: str = "model"
) -> nn.Module:
    """A copy of `model` trained by `train(module)` through `bits`-bit fake quantization of its
    Linear weights, then converted."""
    from torchao.quantization import quantize_
    from torchao.quantization.qat import QATConfig

    check_groups(model, group, what)
    trained = copy.deepcopy(model).cpu()
    base = _base_config(bits, group)
    quantize_(trained, QATConfig(base, step="prepare"))
    train(trained)
    trained.eval()
    quantize_(trained, QATConfig(base, step="convert"))
    return trained


def _pack(q: np.ndarray, bits: int) -> np.ndarray:
    """Signed integers in [-2^(b-1), 2^(b-1)) -> a bit stream, b bits each, little-endian."""
    unsigned = (q.astype(np.int16) + (1 << (bits - 1))).astype(np.uint8).reshape(-1)
    stream = np.unpackbits(unsigned[:, None], axis=1, bitorder="little")[:, :bits]
    return np.packbits(stream.reshape(-1), bitorder="little")


def _unpack(packed: np.ndarray, bits: int, count: int) -> np.ndarray:
    stream = np.unpackbits(packed, bitorder="little")[: count * bits].reshape(count, bits)
    unsigned = np.packbits(stream, axis=1, bitorder="little").reshape(-1)
    return unsigned.astype(np.int16) - (1 << (bits - 1))


def save_packed(model: nn.Module, bits: int, group: int, path: Path) -> None:
    """The quantized model's tensors, low-bit weights packed, as one safetensors file."""
    tensors: dict[str, np.ndarray] = {}
    layers = {}
    for name, value in model.state_dict().items():
        if hasattr(value, "qdata"):
            q = value.qdata.numpy()
            if np.any(value.zero_point.numpy() != 0):
                raise DataError(f"quantize: {name} has non-zero zero points; only symmetric weights are stored")
            tensors[f"{name}.qweight"] = _pack(q, bits)
            tensors[f"{name}.scale"] = value.scale.float().numpy().copy()
            layers[name] = list(q.shape)
        else:
            tensors[name] = value.detach().float().numpy().copy()
    # one metadata key: safetensors writes its metadata map in no fixed order, and the bytes must not vary
    meta = {"quantization": json.dumps({"bits": bits, "group": group, "layers": layers}, sort_keys=True)}
    save_tensors(path, {k: torch.from_numpy(v) for k, v in sorted(tensors.items())}, meta)


def load_packed(model: nn.Module, path: Path) -> nn.Module:
    """`model` (the fp32 architecture) with the tensors of a packed file, low-bit weights dequantized."""
    from safetensors import safe_open

    with safe_open(str(path), framework="np") as f:
        meta = json.loads(f.metadata()["quantization"])
        bits, layers = int(meta["bits"]), meta["layers"]
        state = {}
        for name in model.state_dict():
            if name in layers:
                rows, cols = layers[name]
                q = _unpack(f.get_tensor(f"{name}.qweight"), bits, rows * cols).reshape(rows, cols)
                scale = f.get_tensor(f"{name}.scale").reshape(rows, -1)
                per = cols // scale.shape[1]
                state[name] = torch.from_numpy(
                    (q.astype(np.float32).reshape(rows, -1, per) * scale[:, :, None]).reshape(rows, cols)
                )
            else:
                state[name] = torch.from_numpy(f.get_tensor(name))
    model.load_state_dict(state)
    return model.eval()
