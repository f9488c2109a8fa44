"""evaluate: teacher, scratch student and distilled student on the test split; metrics, plots, report."""

from __future__ import annotations

import os

import pandas as pd
import torch

from kdcore.artifacts import atomic_path, write_json, write_text
from kdcore.checkpoint import WEIGHTS, load_model_dir
from kdcore.config import Params
from kdcore.data.prepared import load_meta, load_split
from kdcore.evaluate.metrics import latency_ms, quality_metrics
from kdcore.evaluate.plots import confusion_matrix, save_confusion_png, save_curves_png
from kdcore.inference import predict_logits
from kdcore.models import count_params

MODEL_KEYS = ("teacher", "student_scratch", "student_kd")
LABELS = {"teacher": "teacher", "student_scratch": "student (scratch)", "student_kd": "student (distilled)"}


def render_report(summary: dict[str, dict[str, float]], meta: dict, params: Params) -> str:
    rows = [
        "| model | accuracy | NLL | ECE | agreement | parameters | size (KiB) | latency b1 (ms) | latency b256 (ms) |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for key in MODEL_KEYS:
        m = summary[key]
        rows.append(
            f"| {LABELS[key]} | {m['accuracy']:.4f} | {m['nll']:.4f} | {m['ece']:.4f} | {m['agreement']:.4f} | "
            f"{m['params']:,} | {m['size_bytes'] / 1024:.1f} | {m['latency_ms_b1']:.3f} | {m['latency_ms_b256']:.3f} |"
        )
    kd, scratch, teacher = summary["student_kd"], summary["student_scratch"], summary["teacher"]
    gain = (kd["accuracy"] - scratch["accuracy"]) * 100
    return "\n".join(
        [
            "# kdflow report",
            "",
            f"Data: `{meta['source']}`, test split of {meta['sizes']['test']} samples, seed {params.seed}. "
            f"Teacher `{params.teacher.model.name}`, student `{params.student.model.name}`, "
            f"Hinton KD at T={params.distill.temperature:g}, alpha={params.distill.alpha:g}, "
            f"{params.transfer.views} views per transfer sample.",
            "",
            *rows,
            "",
            f"Distillation gain over the scratch student: **{gain:+.2f} points** of test accuracy; "
            f"the student has {teacher['params'] / kd['params']:.1f}x fewer parameters than the teacher "
            f"and runs {teacher['latency_ms_b256'] / max(kd['latency_ms_b256'], 1e-9):.1f}x faster at batch 256.",
            "",
            f"Latency: median of {params.evaluate.latency_repeats} CPU runs with "
            f"{params.evaluate.latency_threads} thread(s). ECE: {params.evaluate.ece_bins} equal-width bins.",
            "",
            "![confusion matrices](../plots/confusion.png)",
            "",
            "![training curves](../plots/training_curves.png)",
            "",
        ]
    )


def run(params: Params) -> None:
    paths = params.paths
    prepared = load_meta(paths.prepared)
    test = load_split(paths.prepared, "test")
    dirs = {"teacher": paths.teacher, "student_scratch": paths.student_scratch, "student_kd": paths.student_kd}
    models = {key: load_model_dir(d)[0] for key, d in dirs.items()}
    logits = {key: predict_logits(m, test.x) for key, m in models.items()}
    teacher_pred = logits["teacher"].argmax(1)

    summary: dict[str, dict[str, float]] = {}
    for key, model in models.items():
        metrics = quality_metrics(logits[key], test.y, teacher_pred, params.evaluate.ece_bins)
        metrics["params"] = count_params(model)
        metrics["size_bytes"] = os.path.getsize(dirs[key] / WEIGHTS)
        one = test.x[:1]
        many = test.x[:256] if len(test.x) >= 256 else test.x[torch.arange(256) % len(test.x)]
        metrics["latency_ms_b1"] = latency_ms(
            model, one, params.evaluate.latency_repeats, params.evaluate.latency_threads
        )
        metrics["latency_ms_b256"] = latency_ms(
            model, many, params.evaluate.latency_repeats, params.evaluate.latency_threads
        )
        summary[key] = {k: round(v, 6) if isinstance(v, float) else v for k, v in metrics.items()}

    num_classes = prepared.num_classes
    matrices = {LABELS[k]: confusion_matrix(test.y, logits[k].argmax(1), num_classes) for k in MODEL_KEYS}
    names = prepared.meta["class_names"]
    frame = pd.DataFrame(
        {
            "actual": [names[i] for i in test.y.tolist()],
            "predicted": [names[i] for i in logits["student_kd"].argmax(1).tolist()],
        }
    )
    with atomic_path(paths.plots / "confusion.csv") as tmp:
        frame.to_csv(tmp, index=False)
    save_confusion_png(paths.plots / "confusion.png", matrices, names)
    save_curves_png(
        paths.plots / "training_curves.png",
        {LABELS[k]: paths.live / k for k in MODEL_KEYS},
        ["eval/accuracy", "train/accuracy", "train/loss"],
    )
    write_json(paths.metrics / "summary.json", summary)
    write_text(paths.reports / "report.md", render_report(summary, prepared.meta, params))

    kd, scratch = summary["student_kd"]["accuracy"], summary["student_scratch"]["accuracy"]
    print(
        f"evaluate: teacher {summary['teacher']['accuracy']:.4f}, scratch {scratch:.4f}, "
        f"distilled {kd:.4f} ({(kd - scratch) * 100:+.2f} points) -> {paths.metrics / 'summary.json'}"
    )
