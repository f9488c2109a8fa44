"""int8 students through torchao's PT2E flow: capture, annotate, calibrate or train, convert.

The model is captured with `torch.export` (a dynamic batch dimension), annotated by
`X86InductorQuantizer` (uint8 activations per tensor, int8 weights per output channel), then

- static PTQ: observers record activation ranges on calibration images, `convert_pt2e` folds them
  into quantize / dequantize pairs around each Linear and Conv;
- dynamic PTQ: activation ranges computed per batch at run time (Linear only: MLP students);
- QAT: `prepare_qat_pt2e` inserts fake quantizers, the graph is trained (weights and ranges learn
  the rounding), then converted the same way.

The converted graph is the reference form; what ships is its ONNX export (QDQ pairs that
onnxruntime runs with int8 kernels) and, for torch, the graph lowered by
`lower_pt2e_quantized_to_x86` (Inductor's x86 passes: oneDNN int8 kernels, static shapes).
`torch.ao.quantization` is not used: it is deprecated.
"""

from __future__ import annotations

import copy
import warnings
from collections.abc import Callable

import torch
from torch import nn

from kdcore.errors import DataError

# layers whose weights the x86 quantizer handles (BatchNorm is folded into the convolution before it)
QUANTIZABLE = (nn.Linear, nn.Conv1d, nn.Conv2d, nn.Conv3d, nn.BatchNorm1d, nn.BatchNorm2d, nn.BatchNorm3d)


def check_quantizable(model: nn.Module, what: str, allowed: tuple[type[nn.Module], ...] = QUANTIZABLE) -> None:
    """Raises DataError naming the first layer that holds weights the int8 quantizer cannot quantize."""
    for name, module in model.named_modules():
        if any(True for _ in module.parameters(recurse=False)) and not isinstance(module, allowed):
            kinds = ", ".join(sorted({k.__name__ for k in allowed}))
            raise DataError(
                f"quantize {what}: layer {name!r} ({type(module).__name__}) has weights the quantizer "
                f"cannot quantize (it handles {kinds})"
            )


def capture(model: nn.Module, example: torch.Tensor) -> torch.fx.GraphModule:
    """`torch.export` graph of a copy of `model` in eval mode, the batch dimension dynamic (the graph
    shares its parameters with the module it captures: training it must not change `model`)."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        program = torch.export.export(
            copy.deepcopy(model).cpu().eval(), (example,), dynamic_shapes=({0: torch.export.Dim("batch")},)
        )
    return program.module()


def _quantizer(*, dynamic: bool = False, qat: bool = False):
    from torchao.quantization.pt2e.quantizer import x86_inductor_quantizer as x86

    # static activations in 7 bits (0..127): without VNNI, x86 int8 kernels (onnxruntime's u8s8 among
    # them) add pairs of uint8 x int8 products in int16, which saturates with full-range activations.
    # Dynamic ranges are computed at run time by the runtime itself, in full range.
    config = x86.get_default_x86_inductor_quantization_config(is_dynamic=dynamic, is_qat=qat, reduce_range=not dynamic)
    return x86.X86InductorQuantizer().set_global(config)


def ptq_int8(model: nn.Module, calibration: torch.Tensor, *, dynamic: bool = False, what: str = "model") -> nn.Module:
    """Post-training int8: static (ranges from `calibration`, (N, C, H, W)) or dynamic (Linear only)."""
    from torchao.quantization.pt2e.quantize_pt2e import convert_pt2e, prepare_pt2e

    check_quantizable(model, what, (nn.Linear,) if dynamic else QUANTIZABLE)
    if not dynamic and len(calibration) == 0:
        raise DataError(f"quantize {what}: no calibration images (the transfer set is empty)")
    prepared = prepare_pt2e(capture(model, calibration[:2]), _quantizer(dynamic=dynamic))
    with torch.no_grad():
        for first in range(0, len(calibration), 64):
            prepared(calibration[first : first + 64])
    return _evaluable(convert_pt2e(prepared))


def qat_int8(
    model: nn.Module, example: torch.Tensor, train: Callable[[nn.Module], None], *, what: str = "model"
) -> nn.Module:
    """Quantization-aware int8: the captured graph with fake quantizers, trained by `train(module)`
    (which may switch it between train and eval mode), then converted."""
    from torchao.quantization.pt2e import allow_exported_model_train_eval
    from torchao.quantization.pt2e.quantize_pt2e import convert_pt2e, prepare_qat_pt2e

    check_quantizable(model, what)
    prepared = prepare_qat_pt2e(capture(model, example[:2]), _quantizer(qat=True))
    allow_exported_model_train_eval(prepared)
    train(prepared)
    prepared.eval()
    return _evaluable(convert_pt2e(prepared))


def _evaluable(converted: nn.Module) -> nn.Module:
    """A converted graph that accepts .eval() / .train() (a no-op for its quantized ops)."""
    from torchao.quantization.pt2e import allow_exported_model_train_eval

    allow_exported_model_train_eval(converted)
    return converted


class Lowered(nn.Module):
    """A converted int8 graph lowered to oneDNN int8 kernels for one static batch size; other batch
    sizes are padded (repeating the first row) to it and the extra rows dropped."""

    def __init__(self, converted: nn.Module, example: torch.Tensor) -> None:
        super().__init__()
        from torchao.quantization.pt2e.lowering import lower_pt2e_quantized_to_x86

        self.batch = len(example)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            program = torch.export.export(converted, (example,)).module()
            lowered = lower_pt2e_quantized_to_x86(program, (example,))
            for node in lowered.graph.nodes:  # oneDNN int8 convolutions return channels-last tensors: no view()
                if node.target is torch.ops.aten.view.default:
                    node.target = torch.ops.aten.reshape.default
            lowered.recompile()
            with torch.no_grad():
                lowered(example)  # packs the weights now, not in the first timed call
        self._lowered = (lowered,)  # not a submodule: train() / eval() must not reach the exported graph

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        outs = []
        for first in range(0, len(x), self.batch):
            part = x[first : first + self.batch]
            n = len(part)
            if n < self.batch:
                part = torch.cat([part, part[:1].expand(self.batch - n, *part.shape[1:])])
            with torch.no_grad():
                outs.append(self._lowered[0](part)[:n])
        return torch.cat(outs)
