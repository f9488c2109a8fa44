"""evaluate: every teacher, their ensemble, the scratch and the distilled student on the test split."""

from __future__ import annotations

import os
from pathlib import Path

import pandas as pd
import torch
from torch import nn

from kdcore.artifacts import atomic_path, read_json, write_json, write_text
from kdcore.checkpoint import WEIGHTS, load_model_dir, weights_file
from kdcore.config import Params
from kdcore.data.prepared import load_meta, load_split
from kdcore.evaluate.measured import split_measured
from kdcore.evaluate.metrics import latency_ms, quality_metrics
from kdcore.evaluate.plots import (
    confusion_matrix,
    per_class_accuracy,
    save_confusion_png,
    save_curves_png,
    save_per_class_png,
)
from kdcore.inference import predict_logits
from kdcore.models import count_params
from kdcore.transfer.ensemble import Ensemble

STUDENT_KEYS = ("student_scratch", "student_kd")
LABELS = {"teacher": "teacher", "student_scratch": "student (scratch)", "student_kd": "student (distilled)"}


def teacher_label(params: Params) -> str:
    """What the students learned from: the one teacher, or the ensemble of several."""
    if len(params.teachers) == 1:
        return f"teacher {next(iter(params.teachers))}"
    return f"ensemble ({params.transfer.ensemble.method} of {len(params.teachers)})"


def transfer_set_label(transfer_set: dict[str, int], synth_method: str | None) -> str:
    """What the distilled student learned from, in words."""
    real, synthetic = transfer_set["real_samples"], transfer_set["synthetic_samples"]
    parts = []
    if real:
        parts.append(f"{real:,} real")
    if synthetic:
        parts.append(
            f"{synthetic:,} synthetic (`{synth_method}`, never a real image)"
            if not real
            else f"{synthetic:,} synthetic (`{synth_method}`)"
        )
    return f"{' and '.join(parts)} transfer images x {transfer_set['views_per_sample']} views"


DEPLOYED_FILES = ("export.json", "quantize.json")  # the export and quantize stages' rows, merged into summary.json


def deployed_label(name: str, model: str) -> tuple[str, str]:
    """(what the file is, the runtime its accuracy and latency come from) for an export / quantize row."""
    kind = name[len(model) + 1 :]
    if kind == "onnx":
        return "fp32 ONNX", "onnxruntime"
    if kind == "int8":
        return "int8 PTQ (onnxruntime static QDQ)", "onnxruntime"
    if kind.startswith("int8"):
        how = {"pt2e": "PTQ", "qat": "QAT + KD", "qat_labels": "QAT, hard labels", "dynamic": "dynamic PTQ"}
        return f"int8 {how.get(kind[5:], kind[5:])} (torchao PT2E)", "onnxruntime; torch oneDNN"
    bits, _, rest = kind.partition("_")
    how = {"": "PTQ", "qat": "QAT + KD", "qat_labels": "QAT, hard labels"}.get(rest, rest)
    return f"{bits} weights {how} (torchao)", "torch"


def render_deployed(summary: dict[str, dict[str, float]]) -> list[str]:
    """The table of exported and quantized files, each beside its fp32 model."""
    lines = []
    for model in STUDENT_KEYS:
        names = [n for n in summary if n.startswith(f"{model}_")]
        if not names:
            continue
        fp32 = summary[model]
        lines += [
            f"Deployed forms of the {LABELS[model]} (accuracy measured in the runtime named; the torch "
            "figures of the int8 graphs come from them lowered to oneDNN int8 kernels):",
            "",
            "| file | runtime | accuracy | agreement with fp32 | size (KiB) | size vs fp32 |",
            "|---|---|---:|---:|---:|---:|",
            f"| fp32 weights | torch eager | {fp32['accuracy']:.4f} | 1.0000 | "
            f"{fp32['size_bytes'] / 1024:.1f} | 1.00x |",
        ]
        for name in names:
            m = summary[name]
            label, runtime = deployed_label(name, model)
            lines.append(
                f"| `{name}`: {label} | {runtime} | {m['accuracy']:.4f} | {m['agreement_fp32']:.4f} | "
                f"{m['size_bytes'] / 1024:.1f} | {m['size_bytes'] / fp32['size_bytes']:.2f}x |"
            )
        lines.append("")
    return lines


def render_latency(latency: dict[str, dict[str, float]], params: Params) -> str:
    """reports/latency.md: CPU latency of every model and deployed file, in the runtime it ships in."""
    rows = [
        "| model or file | runtime | batch 1 (ms) | batch 256 (ms) | torch oneDNN, batch 1 (ms) | batch 256 (ms) |",
        "|---|---|---:|---:|---:|---:|",
    ]
    for key, m in latency.items():
        base = next((s for s in STUDENT_KEYS if key.startswith(f"{s}_")), None)
        label, runtime = deployed_label(key, base) if base else (LABELS.get(key, key.replace("/", " ")), "torch eager")
        torch_b1 = f"{m['latency_torch_ms_b1']:.3f}" if "latency_torch_ms_b1" in m else ""
        torch_b256 = f"{m['latency_torch_ms_b256']:.3f}" if "latency_torch_ms_b256" in m else ""
        rows.append(
            f"| {label} (`{key}`) | {runtime} | {m['latency_ms_b1']:.3f} | {m['latency_ms_b256']:.3f} | "
            f"{torch_b1} | {torch_b256} |"
        )
    teacher, kd = latency["teacher"], latency["student_kd"]
    return "\n".join(
        [
            "# kdflow latency",
            "",
            f"Median of {params.evaluate.latency_repeats} CPU runs with {params.evaluate.latency_threads} "
            "thread(s), measured by the evaluate, export and quantize stages of this run. These are wall-clock "
            "measurements: they move between identical runs and machines, so they are kept here and in "
            "`metrics/timings/`, apart from the figures that identical runs reproduce to the byte.",
            "",
            *rows,
            "",
            f"The distilled student runs {teacher['latency_ms_b256'] / max(kd['latency_ms_b256'], 1e-9):.1f}x "
            f"faster than the {teacher_label(params)} at batch 256.",
            "",
        ]
    )


def write_rows(params: Params, name: str, rows: dict[str, dict]) -> None:
    """metrics/<name>.json: what a stage computed, the same bytes on every identical run;
    metrics/timings/<name>.json: its latencies, which are measured and move from run to run."""
    computed, measured = split_measured(rows)
    write_json(params.paths.metrics / f"{name}.json", computed)
    write_json(params.paths.metrics / "timings" / f"{name}.json", measured)


def render_report(summary: dict[str, dict[str, float]], meta: dict, params: Params, synth_method: str | None) -> str:
    rows = [
        "| model | accuracy | NLL | ECE | agreement | parameters | size (KiB) |",
        "|---|---:|---:|---:|---:|---:|---:|",
    ]
    members = [f"teacher/{name}" for name in params.teachers]
    shown = [*members, "teacher", *STUDENT_KEYS] if len(members) > 1 else ["teacher", *STUDENT_KEYS]
    for key in shown:
        m = summary[key]
        label = teacher_label(params) if key == "teacher" else LABELS.get(key, key.replace("/", " "))
        rows.append(
            f"| {label} | {m['accuracy']:.4f} | {m['nll']:.4f} | {m['ece']:.4f} | {m['agreement']:.4f} | "
            f"{m['params']:,} | {m['size_bytes'] / 1024:.1f} |"
        )
    kd, scratch, teacher = summary["student_kd"], summary["student_scratch"], summary["teacher"]
    gain = (kd["accuracy"] - scratch["accuracy"]) * 100
    terms = " + ".join(f"{t.weight:g} {t.name}" for t in params.distill.terms)
    born_again = f", {params.distill.generations} born-again generations" if params.distill.generations > 1 else ""
    return "\n".join(
        [
            "# kdflow report",
            "",
            f"Data: `{meta['source']}`, test split of {meta['sizes']['test']} samples, seed {params.seed}. "
            f"Soft labels from the {teacher_label(params)}, student `{params.student.model.name}`, "
            f"loss {terms} at T={params.distill.temperature:g}{born_again}, "
            f"{params.transfer.views} views per transfer sample. Agreement is with the {teacher_label(params)}.",
            "",
            f"The distilled student learned from {transfer_set_label(summary['transfer_set'], synth_method)}; "
            f"the scratch student from the {summary['transfer_set']['scratch_samples']:,} real transfer images, "
            "hard labels only."
            + (
                " Samples of the synthetic images: [plots/synthetic_samples.png](../plots/synthetic_samples.png)."
                if summary["transfer_set"]["synthetic_samples"]
                else ""
            ),
            "",
            *rows,
            "",
            f"Distillation gain over the scratch student: **{gain:+.2f} points** of test accuracy; "
            f"the student has {teacher['params'] / kd['params']:.1f}x fewer parameters than the "
            f"{teacher_label(params)}. Latency of every model and file: [latency.md](latency.md) (wall-clock "
            "measurements, kept apart from the figures above, which identical runs reproduce to the byte).",
            "",
            *render_deployed(summary),
            f"ECE: {params.evaluate.ece_bins} equal-width bins.",
            "",
            "![confusion matrices](../plots/confusion.png)",
            "",
            "![training curves](../plots/training_curves.png)",
            "",
            "Test accuracy per class (which classes a student lost; figures in `metrics/per_class.json`):",
            "",
            "![test accuracy per class](../plots/per_class_accuracy.png)",
            "",
        ]
    )


def cost_metrics(model: nn.Module, weight_files: list[Path], x: torch.Tensor, params: Params) -> dict[str, float]:
    """Parameters, bytes on disk and CPU latency at batch 1 and 256."""
    many = x[:256] if len(x) >= 256 else x[torch.arange(256) % len(x)]
    repeats, threads = params.evaluate.latency_repeats, params.evaluate.latency_threads
    return {
        "params": count_params(model),
        "size_bytes": sum(os.path.getsize(f) for f in weight_files),
        "latency_ms_b1": latency_ms(model, x[:1], repeats, threads),
        "latency_ms_b256": latency_ms(model, many, repeats, threads),
    }


def teacher_of(params: Params, members: dict[str, nn.Module] | None = None) -> nn.Module:
    """What the students learned from: the one teacher, or the teachers' ensemble as build_transfer combined them."""
    if members is None:
        members = {name: load_model_dir(params.paths.teachers / name)[0] for name in params.teachers}
    if len(members) == 1:
        return next(iter(members.values()))
    ensemble = params.transfer.ensemble
    return Ensemble(list(members.values()), ensemble.method, ensemble.weights, ensemble.tau)


def run(params: Params) -> None:
    paths = params.paths
    prepared = load_meta(paths.prepared)
    test = load_split(paths.prepared, "test")
    members = {name: load_model_dir(paths.teachers / name)[0] for name in params.teachers}
    models: dict[str, nn.Module] = {f"teacher/{name}": m for name, m in members.items()}
    models["teacher"] = teacher_of(params, members)
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
        metrics.update(cost_metrics(model, files[key], test.x, params))
        summary[key] = {k: round(v, 6) if isinstance(v, float) else v for k, v in metrics.items()}

    if prepared.meta["sizes"].get("validation", 0):  # the split searches choose on; test stays for reporting
        val = load_split(paths.prepared, "validation")
        for key, model in models.items():
            accuracy = (predict_logits(model, val.x).argmax(1) == val.y).float().mean()
            summary[key]["val_accuracy"] = round(float(accuracy), 6)

    num_classes = prepared.num_classes
    shown = {"teacher": teacher_label(params), **{k: LABELS[k] for k in STUDENT_KEYS}}
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
    shown_rows = {
        (teacher_label(params) if key == "teacher" else LABELS.get(key, key)): acc for key, acc in per_class.items()
    }
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
        "scratch_samples": (prepared.meta["sizes"]["transfer"] if params.transfer.labeled else 0)
        + (prepared.meta["sizes"]["teacher_train"] if params.transfer.include_teacher_train else 0),
    }
    computed, latency = split_measured(summary)
    write_json(paths.metrics / "timings" / "evaluate.json", latency)
    for name in DEPLOYED_FILES:  # rows of the files that ship, measured by the export and quantize stages
        if (paths.metrics / name).is_file():
            computed.update(read_json(paths.metrics / name))
        if (paths.metrics / "timings" / name).is_file():
            latency.update(read_json(paths.metrics / "timings" / name))
    write_json(paths.metrics / "summary.json", computed)
    write_text(paths.reports / "report.md", render_report(computed, prepared.meta, params, synth.get("method")))
    write_text(paths.reports / "latency.md", render_latency(latency, params))

    kd, scratch = computed["student_kd"]["accuracy"], computed["student_scratch"]["accuracy"]
    each = ", ".join(f"{name} {computed[f'teacher/{name}']['accuracy']:.4f}" for name in members)
    print(
        f"evaluate: teachers {each}; {teacher_label(params)} {summary['teacher']['accuracy']:.4f}, "
        f"scratch {scratch:.4f}, distilled {kd:.4f} ({(kd - scratch) * 100:+.2f} points) "
        f"-> {paths.metrics / 'summary.json'}"
    )
