"""Teachers trained elsewhere and given as ONNX files, run by onnxruntime as black boxes: logits only."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from torch import nn

from kdcore.errors import ConfigError, DataError


class OnnxModel(nn.Module):
    """An ONNX classifier behind the nn.Module call: (N, C, H, W) -> (N, classes) logits, on the CPU.

    It has no layers to hook and passes no gradient, so what needs either (feature terms, inversion,
    a generator) refuses it before any work; everything that only reads logits treats it like any model."""

    def __init__(self, path: Path) -> None:
        super().__init__()
        import onnxruntime as ort

        self.path = Path(path)
        options = ort.SessionOptions()
        options.intra_op_num_threads = torch.get_num_threads()
        options.inter_op_num_threads = 1
        try:
            self.session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
        except Exception as err:  # onnxruntime raises its own exception types for unreadable models
            first = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
            raise DataError(f"{path}: not a loadable ONNX model ({first})") from None
        inputs = self.session.get_inputs()
        if len(inputs) != 1:
            raise DataError(f"{path}: an ONNX teacher must take one input (the images), this one takes {len(inputs)}")
        self.input_name = inputs[0].name
        self.num_parameters = onnx_parameter_count(self.path)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.requires_grad:
            raise ConfigError(f"{self.path}: an ONNX teacher passes no gradient (it is run by onnxruntime)")
        try:
            (logits, *_) = self.session.run(None, {self.input_name: x.detach().cpu().numpy().astype(np.float32)})
        except Exception as err:
            first = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
            raise DataError(f"{self.path}: onnxruntime failed on input {tuple(x.shape)} ({first})") from None
        return torch.from_numpy(np.ascontiguousarray(logits)).float().to(x.device)


def onnx_parameter_count(path: Path) -> int:
    """Number of values in the model's initializers (its weights)."""
    import onnx

    model = onnx.load(str(path), load_external_data=False)
    return int(sum(int(np.prod(t.dims)) for t in model.graph.initializer))
