"""export: ONNX files of the students (fp32 and int8 QDQ), checked and evaluated in onnxruntime.

For each model in export.models: `models/export/<model>/model.onnx` (fp32) and, with export.int8,
`model_int8.onnx` (static int8 calibrated on the first export.calibration_samples images of build_transfer's pool).
Each file is loaded in onnxruntime and run on the test split with one thread, the runtime that ships
it: the fp32 file must give torch's logits (max |difference| < 1e-3), and `metrics/export.json` gets a
row per file (`<model>_onnx`, `<model>_int8`) with accuracy, NLL, ECE, agreement with the teacher and
with the torch model, size on disk, and onnxruntime latency at batch 1 and 256.
"""

from __future__ import annotations

import torch

from kdcore.checkpoint import load_model_dir
from kdcore.config import Params
from kdcore.data.prepared import load_meta, load_split
from kdcore.errors import DataError
from kdcore.evaluate.measured import write_rows
from kdcore.evaluate.metrics import cost_metrics, quality_metrics
from kdcore.inference import predict_logits
from kdcore.models.onnx import OnnxModel
from kdcore.quantize.onnx_export import export_onnx, preprocessing_metadata, quantize_int8, stamp_metadata
from kdcore.transfer.ensemble import as_one_teacher
from kdcore.transfer.pool import POOL_FILE, SYNTHETIC_FILE, calibration_images, load_pool

MAX_FP32_DIFF = 1e-3  # onnxruntime against torch on the same fp32 weights


def run(params: Params) -> None:
    if params.data.is_graph:  # kdcore/graph/deploy.py
        from kdcore.graph import deploy, pipeline

        paths, ev = params.paths, params.evaluate
        graph, _ = pipeline.prepared_graph(paths.prepared)
        students = {"student_kd": paths.student_kd, "student_scratch": paths.student_scratch}
        deploy.export_students(graph, students, paths.transfer, paths.exported, paths.metrics, params.export,
                               ev.latency_threads, ev.latency_repeats, params.seed)  # fmt: skip
        return
    cfg = params.export
    meta = load_meta(params.paths.prepared)
    test = load_split(params.paths.prepared, "test")
    ensemble = params.transfer.ensemble
    members = {name: load_model_dir(params.paths.teachers / name)[0] for name in params.teachers}
    teacher = as_one_teacher(members, ensemble.method, ensemble.weights, ensemble.tau)
    teacher_pred = predict_logits(teacher, test.x).argmax(1)
    pool = (
        load_pool(params.paths.transfer / POOL_FILE, params.paths.prepared, params.paths.synthetic / SYNTHETIC_FILE)
        if cfg.int8
        else None
    )
    calibration = (
        calibration_images(pool, cfg.calibration_samples, "export.calibration_samples") if pool is not None else None
    )
    torch.set_num_threads(params.evaluate.latency_threads)  # the onnxruntime sessions take this thread count
    rows: dict[str, dict[str, float]] = {}
    for key in cfg.models:
        model, _ = load_model_dir(getattr(params.paths, key))
        reference = predict_logits(model, test.x)
        out = params.paths.exported / key
        files = {f"{key}_onnx": out / "model.onnx"}
        export_onnx(model, meta.input_shape, files[f"{key}_onnx"])
        if cfg.int8:
            files[f"{key}_int8"] = out / "model_int8.onnx"
            quantize_int8(files[f"{key}_onnx"], files[f"{key}_int8"], calibration, cfg.per_channel, cfg.reduce_range)
        for name, path in files.items():
            stamp_metadata(path, preprocessing_metadata(meta.meta))  # how to feed it raw samples
            shipped = OnnxModel(path)
            logits = predict_logits(shipped, test.x)
            diff = float((logits - reference).abs().max())
            if name.endswith("_onnx") and diff > MAX_FP32_DIFF:
                raise DataError(
                    f"export {key}: onnxruntime's logits differ from torch's by {diff:.2e} (> {MAX_FP32_DIFF})"
                )
            row = quality_metrics(logits, test.y, teacher_pred, params.evaluate.ece_bins)
            row["agreement_fp32"] = float((logits.argmax(1) == reference.argmax(1)).float().mean())
            row["max_abs_diff_fp32"] = diff
            row.update(
                cost_metrics(shipped, [path], test.x, params.evaluate.latency_repeats, params.evaluate.latency_threads)
            )
            row["file"] = path.relative_to(params.paths.exported.parent).as_posix()  # e.g. export/student_kd/model.onnx
            rows[name] = {k: round(v, 6) if isinstance(v, float) else v for k, v in row.items()}
            print(
                f"export: {name}: accuracy {row['accuracy']:.4f}, agreement with torch {row['agreement_fp32']:.4f}, "
                f"{row['size_bytes']:,} bytes, {row['latency_ms_b256']:.3f} ms at batch 256 -> {path}"
            )
    write_rows(params.paths.metrics, "export", rows)
