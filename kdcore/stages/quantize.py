"""quantize: int8 and low-bit students (torchao), each evaluated in the runtime that ships it.

For each model in quantize.models, under `models/quantized/<model>/`:

- `int8_ptq.onnx`: static int8 by torchao's PT2E flow (X86InductorQuantizer), calibrated on the first
  quantize.calibration_samples transfer images; `int8_qat.onnx`: the same after quantization-aware
  training on the transfer views (quantize.qat: the distillation objective, or hard labels);
  `int8_dynamic.onnx` (quantize.dynamic_int8): activation ranges per batch, Linear layers only.
  The ONNX files (QDQ) run in onnxruntime with one thread: their accuracy and latency are the row's.
  The same converted graphs lowered to oneDNN int8 kernels (static batch) give `accuracy_torch` and
  `latency_torch_ms_b1` / `_b256`.
- `int<b>.safetensors` / `int<b>_qat.safetensors` (quantize.low_bit): Linear weights rounded to b
  bits, packed; run in torch with the dequantized weights.

`metrics/quantize.json` gets a row per file, its path under models/ in `file`: `<model>_int8_pt2e`
(`int8_ptq.onnx`), `<model>_int8_qat`,
`<model>_int8_dynamic`, `<model>_int<b>`, `<model>_int<b>_qat` (`_qat_labels` when QAT used hard
labels), with accuracy, NLL, ECE, agreement with the teacher and with the fp32 model, size on disk
and latencies.
"""

from __future__ import annotations

import copy
from collections.abc import Callable
from pathlib import Path

import torch
from torch import nn

from kdcore.checkpoint import load_model_dir
from kdcore.config import Params, TrainConfig
from kdcore.data.prepared import load_meta, load_split
from kdcore.errors import DataError
from kdcore.evaluate.measured import write_rows
from kdcore.evaluate.metrics import cost_metrics, latency_ms, quality_metrics
from kdcore.inference import predict_logits
from kdcore.losses.compose import Objective
from kdcore.models.onnx import OnnxModel
from kdcore.quantize.lowbit import check_groups, load_packed, ptq_lowbit, qat_lowbit, save_packed
from kdcore.quantize.onnx_export import export_onnx, preprocessing_metadata, stamp_metadata
from kdcore.quantize.pt2e import Lowered, ptq_int8, qat_int8
from kdcore.runtime import seed_everything
from kdcore.training import ViewSet, fit
from kdcore.transfer.ensemble import as_one_teacher
from kdcore.transfer.pool import SYNTHETIC_FILE, calibration_images, load_view_set

MAX_PACKED_DIFF = 1e-4  # the packed file's model against the quantized model it was written from


def qat_objective(params: Params) -> tuple[Objective, str]:
    """The QAT loss and the rows' suffix: distill.terms' logit terms (kd) or cross-entropy (labels)."""
    cfg = params.quantize.qat
    if cfg.targets == "labels":
        return Objective([{"name": "ce", "weight": 1.0}], params.distill.temperature), "_qat_labels"
    terms = [t.model_dump(mode="json") for t in params.distill.terms if not t.feature]  # logits only
    if not terms:
        raise DataError("quantize.qat.targets: kd needs a kd, dkd or ce term in distill.terms")
    return Objective(terms, params.distill.temperature), "_qat"


def qat_trainer(params: Params, views: ViewSet, name: str) -> Callable[[nn.Module], None]:
    """Trains a fake-quantized module on the transfer views for quantize.qat's budget."""
    cfg = params.quantize.qat
    objective, _ = qat_objective(params)
    if cfg.targets == "labels" and not bool((views.y >= 0).any()):
        raise DataError("quantize.qat.targets: labels needs labelled transfer views; the transfer set has none")
    train = TrainConfig(epochs=cfg.epochs, batch_size=cfg.batch_size, lr=cfg.lr, optimizer="adam")

    def run(module: nn.Module) -> None:
        seed_everything(params.seed)  # the result must not depend on what ran before it in the stage
        fit(module, views, objective, train, seed=params.seed, device=torch.device("cpu"), desc=f"quantize {name}")

    return run


def evaluate_file(
    params: Params, model: nn.Module, files: list[Path], test, reference: torch.Tensor, teacher_pred: torch.Tensor
) -> dict[str, float]:
    logits = predict_logits(model, test.x)
    row = quality_metrics(logits, test.y, teacher_pred, params.evaluate.ece_bins)
    row["agreement_fp32"] = float((logits.argmax(1) == reference.argmax(1)).float().mean())
    row.update(cost_metrics(model, files, test.x, params.evaluate.latency_repeats, params.evaluate.latency_threads))
    return row


def torch_figures(params: Params, converted: nn.Module, test) -> dict[str, float]:
    """Accuracy and latency of the int8 graph lowered to oneDNN kernels (static batch 1 and 256)."""
    repeats, threads = params.evaluate.latency_repeats, params.evaluate.latency_threads
    many = test.x[torch.arange(256) % len(test.x)]
    big = Lowered(converted, many)
    accuracy = float((predict_logits(big, test.x, batch_size=256).argmax(1) == test.y).float().mean())
    return {
        "accuracy_torch": accuracy,
        "latency_torch_ms_b1": latency_ms(Lowered(converted, test.x[:1]), test.x[:1], repeats, threads),
        "latency_torch_ms_b256": latency_ms(big, many, repeats, threads),
    }


def run(params: Params) -> None:
    if params.data.is_graph:  # the int8 student is export's ONNX file
        from kdcore.graph import deploy

        return deploy.no_quantized_files(params.paths.quantized, params.paths.metrics)
    cfg = params.quantize
    meta = load_meta(params.paths.prepared)
    test = load_split(params.paths.prepared, "test")
    ensemble = params.transfer.ensemble
    members = {name: load_model_dir(params.paths.teachers / name)[0] for name in params.teachers}
    teacher = as_one_teacher(members, ensemble.method, ensemble.weights, ensemble.tau)
    teacher_pred = predict_logits(teacher, test.x).argmax(1)
    views, pool = load_view_set(
        params.paths.transfer, params.paths.prepared, params.paths.synthetic / SYNTHETIC_FILE, params.distill.topk_rest
    )
    calibration = calibration_images(pool, cfg.calibration_samples, "quantize.calibration_samples")
    _, suffix = qat_objective(params)
    rows: dict[str, dict[str, float]] = {}
    for key in cfg.models:
        fp32, _ = load_model_dir(getattr(params.paths, key))
        if cfg.low_bit is not None:  # a group that does not fit stops the stage before any work
            check_groups(fp32, cfg.low_bit.group, key)
        reference = predict_logits(fp32, test.x)
        out = params.paths.quantized / key
        graphs: dict[str, tuple[nn.Module, Path]] = {}
        if cfg.int8:
            graphs[f"{key}_int8_pt2e"] = (ptq_int8(fp32, calibration, what=key), out / "int8_ptq.onnx")
        if cfg.int8_qat:
            trained = qat_int8(fp32, calibration, qat_trainer(params, views, f"{key} int8{suffix}"), what=key)
            graphs[f"{key}_int8{suffix}"] = (trained, out / f"int8{suffix}.onnx")
        if cfg.dynamic_int8:
            dynamic = ptq_int8(fp32, calibration, dynamic=True, what=key)
            graphs[f"{key}_int8_dynamic"] = (dynamic, out / "int8_dynamic.onnx")
        for name, (converted, path) in graphs.items():
            export_onnx(converted, meta.input_shape, path)
            stamp_metadata(path, preprocessing_metadata(meta.meta))  # how to feed it raw samples
            row = evaluate_file(params, OnnxModel(path), [path], test, reference, teacher_pred)
            row.update(torch_figures(params, converted, test))
            row["file"] = path.relative_to(params.paths.quantized.parent).as_posix()  # the file this row scores
            rows[name] = row
        if cfg.low_bit is not None:
            bits, group = cfg.low_bit.bits, cfg.low_bit.group
            lowbit = {f"{key}_int{bits}": (ptq_lowbit(fp32, bits, group, key), out / f"int{bits}.safetensors")}
            if cfg.low_bit_qat:
                trainer = qat_trainer(params, views, f"{key} int{bits}{suffix}")
                model = qat_lowbit(fp32, bits, group, trainer, key)
                lowbit[f"{key}_int{bits}{suffix}"] = (model, out / f"int{bits}{suffix}.safetensors")
            for name, (quantized, path) in lowbit.items():
                save_packed(quantized, bits, group, path)
                shipped = load_packed(copy.deepcopy(fp32), path)
                diff = float((predict_logits(shipped, test.x) - predict_logits(quantized, test.x)).abs().max())
                if diff > MAX_PACKED_DIFF:
                    raise DataError(f"quantize {name}: the packed file's logits differ by {diff:.2e} from the model's")
                rows[name] = evaluate_file(params, shipped, [path], test, reference, teacher_pred)
                rows[name]["file"] = path.relative_to(params.paths.quantized.parent).as_posix()
        for name in [n for n in rows if n.startswith(f"{key}_")]:
            row = rows[name]
            print(
                f"quantize: {name}: accuracy {row['accuracy']:.4f} (fp32 "
                f"{float((reference.argmax(1) == test.y).float().mean()):.4f}), {row['size_bytes']:,} bytes, "
                f"{row['latency_ms_b256']:.3f} ms at batch 256"
            )
    rounded = {n: {k: round(v, 6) if isinstance(v, float) else v for k, v in r.items()} for n, r in rows.items()}
    write_rows(params.paths.metrics, "quantize", rounded)
