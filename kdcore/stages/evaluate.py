"""evaluate: every teacher, their ensemble, the scratch and the distilled student on the test split.

Writes metrics/summary.json (with the rows of the exported and quantized files merged in),
metrics/per_class.json, the plots, reports/report.md and reports/latency.md (kdcore/evaluate/report.py).
"""

from __future__ import annotations

import pandas as pd
import torch
from torch import nn

from kdcore.artifacts import atomic_path, read_json, write_json, write_text
from kdcore.checkpoint import WEIGHTS, load_model_dir, weights_file
from kdcore.config import Params
from kdcore.data.prepared import load_meta, load_split
from kdcore.evaluate.measured import split_measured
from kdcore.evaluate.metrics import cost_metrics, quality_metrics
from kdcore.evaluate.plots import (
    confusion_matrix,
    per_class_accuracy,
    save_confusion_png,
    save_curves_png,
    save_per_class_png,
)
from kdcore.evaluate.report import LABELS, STUDENT_KEYS, RunDescription, render_latency, render_report
from kdcore.inference import predict_logits
from kdcore.omitted import accuracy, shifted
from kdcore.transfer.ensemble import as_one_teacher
from kdcore.transfer.pool import excluded_indices

DEPLOYED_FILES = ("export.json", "quantize.json")  # the export and quantize stages' rows, merged into summary.json


def describe(params: Params) -> RunDescription:
    return RunDescription(
        teachers=list(params.teachers),
        ensemble_method=params.transfer.ensemble.method,
        seed=params.seed,
        student=params.student.model.name,
        terms=" + ".join(f"{t.weight:g} {t.name}" for t in params.distill.terms),
        temperature=params.distill.temperature,
        generations=params.distill.generations,
        views=params.transfer.views,
        exclude_classes=params.transfer.exclude_classes,
        max_per_class=params.transfer.max_per_class,
        ece_bins=params.evaluate.ece_bins,
        latency_repeats=params.evaluate.latency_repeats,
        latency_threads=params.evaluate.latency_threads,
    )


def omitted_rows(student_dir, names: list[str], logits: dict, labels: torch.Tensor) -> dict[str, float] | None:
    """Test figures of the omitted classes' bias correction (kdcore/omitted.py): the distilled student
    without and with it, whichever shipped, beside the scratch student; None when no class was left out."""
    choice = read_json(student_dir / "model.json")["config"].get("omitted_bias")
    if not choice:
        return None
    omitted = excluded_indices(names, choice["classes"])
    bias, shipped = float(choice["bias"]), bool(choice["shipped"] and choice["bias"])
    plain = shifted(logits["student_kd"], omitted, -bias) if shipped else logits["student_kd"]
    corrected = shifted(plain, omitted, bias)
    mask = torch.isin(labels, torch.tensor(omitted))
    row = {
        "bias": bias,
        "shipped": float(shipped),
        "chosen_on_validation": float(choice["chosen_on"] == "validation"),
        "omitted_test_samples": int(mask.sum()),
        "distilled_uncorrected": accuracy(plain, labels),
        "distilled_corrected": accuracy(corrected, labels),
        "distilled_uncorrected_omitted": accuracy(plain[mask], labels[mask]),
        "distilled_corrected_omitted": accuracy(corrected[mask], labels[mask]),
        "scratch": accuracy(logits["student_scratch"], labels),
        "scratch_omitted": accuracy(logits["student_scratch"][mask], labels[mask]),
    }
    for side in ("uncorrected", "corrected"):
        if choice.get(f"val_accuracy_{side}") is not None:
            row[f"val_distilled_{side}"] = choice[f"val_accuracy_{side}"]
    return {k: round(v, 6) if isinstance(v, float) else v for k, v in row.items()}


def evaluate_graph(params: Params) -> None:
    """Graph data (kdcore/graph/deploy.py): every model on the test nodes, and the latency of unseen nodes."""
    from kdcore.graph import deploy, pipeline

    paths = params.paths
    graph, meta = pipeline.prepared_graph(paths.prepared)
    models = {f"teacher_{n}": paths.teachers / n for n in params.teachers}
    models.update(student_scratch=paths.student_scratch, student_kd=paths.student_kd)
    runs = {f"teacher {n}": paths.live / "teachers" / n for n in params.teachers}
    runs.update({"scratch student": paths.live / "student_scratch", "distilled student": paths.live / "student_kd"})
    about = {
        "data": str(params.data.path),
        "teachers": ", ".join(f"{n} ({t.model.name})" for n, t in params.teachers.items()),
        "student": params.student.model.name,
        "terms": " + ".join(f"{t.weight:g} {t.name}" for t in params.distill.terms),
        "temperature": params.distill.temperature,
    }
    ev = params.evaluate
    deploy.evaluate_graph(graph, meta, models, runs, paths, params.transfer.ensemble, ev.ece_bins,
                          ev.latency_threads, ev.latency_repeats, params.seed, about)  # fmt: skip


def run(params: Params) -> None:
    if params.data.is_graph:  # kdcore/graph/deploy.py
        return evaluate_graph(params)
    paths = params.paths
    prepared = load_meta(paths.prepared)
    test = load_split(paths.prepared, "test")
    ensemble = params.transfer.ensemble
    members = {name: load_model_dir(paths.teachers / name)[0] for name in params.teachers}
    models: dict[str, nn.Module] = {f"teacher/{name}": m for name, m in members.items()}
    models["teacher"] = as_one_teacher(members, ensemble.method, ensemble.weights, ensemble.tau)
    run = describe(params)
    models["student_scratch"] = load_model_dir(paths.student_scratch)[0]
    models["student_kd"] = load_model_dir(paths.student_kd)[0]
    files = {f"teacher/{name}": [weights_file(paths.teachers / name)] for name in members}
    files["teacher"] = [weights_file(paths.teachers / name) for name in members]
    files.update({key: [getattr(paths, key) / WEIGHTS] for key in STUDENT_KEYS})

    logits = {key: predict_logits(m, test.x) for key, m in models.items()}
    teacher_pred = logits["teacher"].argmax(1)
    summary: dict[str, dict[str, float]] = {}
    for key, model in models.items():
        metrics = quality_metrics(logits[key], test.y, teacher_pred, params.evaluate.ece_bins)
        metrics.update(
            cost_metrics(model, files[key], test.x, params.evaluate.latency_repeats, params.evaluate.latency_threads)
        )
        summary[key] = {k: round(v, 6) if isinstance(v, float) else v for k, v in metrics.items()}

    if prepared.meta["sizes"].get("validation", 0):  # the split searches choose on; test stays for reporting
        val = load_split(paths.prepared, "validation")
        for key, model in models.items():
            accuracy = (predict_logits(model, val.x).argmax(1) == val.y).float().mean()
            summary[key]["val_accuracy"] = round(float(accuracy), 6)

    num_classes = prepared.num_classes
    shown = {"teacher": run.teacher, **{k: LABELS[k] for k in STUDENT_KEYS}}
    matrices = {label: confusion_matrix(test.y, logits[k].argmax(1), num_classes) for k, label in shown.items()}
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
    per_class = {
        key: [round(float(a), 6) for a in per_class_accuracy(test.y, logits[key].argmax(1), num_classes)]
        for key in models
    }
    write_json(
        paths.metrics / "per_class.json", {key: dict(zip(names, acc, strict=True)) for key, acc in per_class.items()}
    )
    shown_rows = {(run.teacher if key == "teacher" else LABELS.get(key, key)): acc for key, acc in per_class.items()}
    save_per_class_png(paths.plots / "per_class_accuracy.png", shown_rows, names)
    curves = {f"teacher {name}": paths.live / "teachers" / name for name in members}
    curves.update({LABELS[k]: paths.live / k for k in STUDENT_KEYS})
    save_curves_png(paths.plots / "training_curves.png", curves, ["eval/accuracy", "train/accuracy", "train/loss"])
    transfer = read_json(paths.transfer / "summary.json")
    synth = read_json(paths.synthetic / "summary.json")
    summary["transfer_set"] = {
        "real_samples": transfer["real_samples"],
        "synthetic_samples": transfer["synthetic_samples"],
        "views_per_sample": params.transfer.views,
        "scratch_samples": read_json(paths.student_scratch / "model.json")["config"]["samples"],
    }
    omitted = omitted_rows(paths.student_kd, names, logits, test.y)
    if omitted:
        summary["omitted_classes"] = omitted
    computed, latency = split_measured(summary)
    write_json(paths.metrics / "timings" / "evaluate.json", latency)
    for name in DEPLOYED_FILES:  # rows of the files that ship, measured by the export and quantize stages
        if (paths.metrics / name).is_file():
            computed.update(read_json(paths.metrics / name))
        if (paths.metrics / "timings" / name).is_file():
            latency.update(read_json(paths.metrics / "timings" / name))
    write_json(paths.metrics / "summary.json", computed)
    write_text(paths.reports / "report.md", render_report(computed, prepared.meta, run, synth.get("method")))
    write_text(paths.reports / "latency.md", render_latency(latency, run))

    kd, scratch = computed["student_kd"]["accuracy"], computed["student_scratch"]["accuracy"]
    each = ", ".join(f"{name} {computed[f'teacher/{name}']['accuracy']:.4f}" for name in members)
    print(
        f"evaluate: teachers {each}; {run.teacher} {summary['teacher']['accuracy']:.4f}, "
        f"scratch {scratch:.4f}, distilled {kd:.4f} ({(kd - scratch) * 100:+.2f} points) "
        f"-> {paths.metrics / 'summary.json'}"
    )
