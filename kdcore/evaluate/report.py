"""The run's reports in Markdown: reports/report.md (every model, the gain, the deployed files) and
reports/latency.md (the measured latencies, kept apart from the computed figures)."""

from __future__ import annotations

from dataclasses import dataclass

STUDENT_KEYS = ("student_scratch", "student_kd")
LABELS = {"teacher": "teacher", "student_scratch": "student (scratch)", "student_kd": "student (distilled)"}


def teacher_label(teachers: list[str], ensemble_method: str) -> str:
    """What the students learned from: the one teacher, or the ensemble of several."""
    if len(teachers) == 1:
        return f"teacher {teachers[0]}"
    return f"ensemble ({ensemble_method} of {len(teachers)})"


@dataclass(frozen=True)
class RunDescription:
    """What the report says about the run besides its figures (from the params that made it)."""

    teachers: list[str]
    ensemble_method: str
    seed: int
    student: str  # the student's model name
    terms: str  # e.g. "0.5 ce + 0.5 kd"
    temperature: float
    generations: int
    views: int
    ece_bins: int
    latency_repeats: int
    latency_threads: int
    exclude_classes: list[str]  # transfer.exclude_classes: left out of both students' data
    max_per_class: int | None  # transfer.max_per_class

    @property
    def class_filter(self) -> str:
        """The class filters both students learned under, in words ("" when there are none)."""
        parts = []
        if self.exclude_classes:
            parts.append(f"left out class {', '.join(self.exclude_classes)} (`transfer.exclude_classes`)")
        if self.max_per_class:
            parts.append(f"kept at most {self.max_per_class} samples per class (`transfer.max_per_class`)")
        return f" Both students' data {' and '.join(parts)}." if parts else ""

    @property
    def teacher(self) -> str:
        return teacher_label(self.teachers, self.ensemble_method)


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


def render_latency(latency: dict[str, dict[str, float]], run: RunDescription) -> str:
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
            f"Median of {run.latency_repeats} CPU runs with {run.latency_threads} "
            "thread(s), measured by the evaluate, export and quantize stages of this run. These are wall-clock "
            "measurements: they move between identical runs and machines, so they are kept here and in "
            "`metrics/timings/`, apart from the figures that identical runs reproduce to the byte.",
            "",
            *rows,
            "",
            f"The distilled student runs {teacher['latency_ms_b256'] / max(kd['latency_ms_b256'], 1e-9):.1f}x "
            f"faster than the {run.teacher} at batch 256.",
            "",
        ]
    )


def render_omitted(row: dict[str, float] | None, run: RunDescription) -> list[str]:
    """The omitted classes' bias correction: the distilled student without and with it, the scratch student."""
    if not row:
        return []
    classes = ", ".join(run.exclude_classes)
    bias = f"+{row['bias']:g}"
    if row["chosen_on_validation"]:
        how = (
            f"chosen on the validation split (accuracy {row['val_distilled_uncorrected']:.4f} without it, "
            f"{row['val_distilled_corrected']:.4f} with it)"
        )
    else:
        how = "set in params (`distill.omitted_bias`)"
    verdict = "the corrected student ships" if row["shipped"] else "the uncorrected student ships"
    n = int(row["omitted_test_samples"])
    return [
        f"Omitted class {classes}: no transfer sample of it reached either student. The distilled student's "
        f"output bias for it is raised by {bias} (Hinton et al. 2015, section 3), {how}; {verdict}.",
        "",
        f"| student | test accuracy | test accuracy on class {classes} ({n} samples) |",
        "|---|---:|---:|",
        f"| distilled, uncorrected | {row['distilled_uncorrected']:.4f} | {row['distilled_uncorrected_omitted']:.4f} |",
        f"| distilled, bias {bias} | {row['distilled_corrected']:.4f} | {row['distilled_corrected_omitted']:.4f} |",
        f"| scratch | {row['scratch']:.4f} | {row['scratch_omitted']:.4f} |",
        "",
    ]


def render_report(
    summary: dict[str, dict[str, float]], meta: dict, run: RunDescription, synth_method: str | None
) -> str:
    """reports/report.md: every model's figures, the distillation gain, the deployed files, the plots."""
    rows = [
        "| model | accuracy | NLL | ECE | agreement | parameters | size (KiB) |",
        "|---|---:|---:|---:|---:|---:|---:|",
    ]
    members = [f"teacher/{name}" for name in run.teachers]
    shown = [*members, "teacher", *STUDENT_KEYS] if len(members) > 1 else ["teacher", *STUDENT_KEYS]
    for key in shown:
        m = summary[key]
        label = run.teacher if key == "teacher" else LABELS.get(key, key.replace("/", " "))
        rows.append(
            f"| {label} | {m['accuracy']:.4f} | {m['nll']:.4f} | {m['ece']:.4f} | {m['agreement']:.4f} | "
            f"{m['params']:,} | {m['size_bytes'] / 1024:.1f} |"
        )
    kd, scratch, teacher = summary["student_kd"], summary["student_scratch"], summary["teacher"]
    gain = (kd["accuracy"] - scratch["accuracy"]) * 100
    born_again = f", {run.generations} born-again generations" if run.generations > 1 else ""
    return "\n".join(
        [
            "# kdflow report",
            "",
            f"Data: `{meta['source']}`, test split of {meta['sizes']['test']} samples, seed {run.seed}. "
            f"Soft labels from the {run.teacher}, student `{run.student}`, "
            f"loss {run.terms} at T={run.temperature:g}{born_again}, "
            f"{run.views} views per transfer sample. Agreement is with the {run.teacher}.",
            "",
            f"The distilled student learned from {transfer_set_label(summary['transfer_set'], synth_method)}; "
            f"the scratch student from the {summary['transfer_set']['scratch_samples']:,} real transfer images, "
            "hard labels only."
            + run.class_filter
            + (
                " Samples of the synthetic images: [plots/synthetic_samples.png](../plots/synthetic_samples.png)."
                if summary["transfer_set"]["synthetic_samples"]
                else ""
            ),
            "",
            *rows,
            "",
            f"Distillation gain over the scratch student: **{gain:+.2f} points** of test accuracy "
            f"(one test image is {100 / meta['sizes']['test']:.2f} points); "
            f"the student has {teacher['params'] / kd['params']:.1f}x fewer parameters than the "
            f"{run.teacher}. Latency of every model and file: [latency.md](latency.md) (wall-clock "
            "measurements, kept apart from the figures above, which identical runs reproduce to the byte).",
            "",
            *render_omitted(summary.get("omitted_classes"), run),
            *render_deployed(summary),
            f"ECE: {run.ece_bins} equal-width bins.",
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
