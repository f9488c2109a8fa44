"""Quantized students on the bundled data: int8 and low-bit, QAT with KD against QAT with hard labels.

    python benchmarks/quantize.py [--spec benchmarks/quantize.yaml]

For each seed the real stages train the teacher and the distilled student (params.yaml, as in
`dvc repro`), then the real `export` and `quantize` stages run on it: once with QAT on the
distillation objective (quantize.qat.targets: kd), once with hard labels only (labels), for each
low-bit width in the spec. Every file is scored in the runtime that ships it. Writes
reports/quantize.csv (one row per seed and file), reports/quantize.md and reports/quantize.png.
Finished seeds are kept and not measured again.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import pandas as pd
import yaml

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from benchmarks.runs import RunTable  # noqa: E402
from kdcore.artifacts import write_text  # noqa: E402
from kdcore.config import read_yaml  # noqa: E402
from kdcore.evaluate.measured import read_rows  # noqa: E402
from kdcore.evaluate.plots import save_png  # noqa: E402
from kdcore.experiments.sweep import Sweep, set_dotted  # noqa: E402

COLUMNS = ("accuracy", "accuracy_torch", "agreement_fp32", "size_bytes", "latency_ms_b1", "latency_ms_b256",
           "latency_torch_ms_b1", "latency_torch_ms_b256")  # fmt: skip


def kind_of(name: str) -> tuple[str, str, str]:
    """(file kind, QAT targets, runtime) of a row name such as student_kd_int4_qat_labels."""
    kind = name.removeprefix("student_kd_")
    targets = "labels" if kind.endswith("_qat_labels") else "kd" if kind.endswith("_qat") else ""
    runtime = "torch" if kind.startswith("int") and not kind.startswith("int8") else "onnxruntime"
    return kind, targets, runtime


def run_seed(sweep: Sweep, spec: dict, seed: int) -> list[dict]:
    """The distilled student of `seed` through export and quantize; one row per file."""
    sweep.run("quantize", {}, seed)
    run_dir = sweep.work / "runs" / "quantize" / f"seed{seed}"
    summary = read_rows(run_dir / "metrics", "summary")
    fp32 = summary["student_kd"]
    rows = [{"name": "student_kd", "kind": "fp32", "runtime": "torch eager", **fp32}]
    passes = []
    for bits in spec["low_bits"]:
        for targets in ("kd", "labels"):
            first = not passes
            passes.append(
                {
                    "quantize.low_bit": {"bits": bits, "group": spec["group"]},
                    "quantize.qat": {**spec["qat"], "targets": targets},
                    "quantize.int8": first,  # PTQ files do not depend on the QAT targets: measured once
                    "quantize.dynamic_int8": first,
                    "quantize.int8_qat": bits == spec["low_bits"][0],
                    "quantize.calibration_samples": spec["calibration_samples"],
                }
            )
    for i, overrides in enumerate(passes):
        params, _ = sweep.params_for(overrides, seed, run_dir)
        out = run_dir / f"quantized{i}"
        params = params.model_copy(
            update={
                "paths": params.paths.model_copy(
                    update={"quantized": out / "files", "exported": out / "export", "metrics": out / "metrics"}
                )
            }  # fmt: skip
        )
        from kdcore.stages import get_stage

        if i == 0:
            get_stage("export")(params)
            found = read_rows(out / "metrics", "export")
            rows += [{"name": n, **r} for n, r in found.items()]
        get_stage("quantize")(params)
        found = read_rows(out / "metrics", "quantize")
        rows += [{"name": n, **r} for n, r in found.items() if not any(n == row["name"] for row in rows)]
    out_rows = []
    for row in rows:
        kind, targets, runtime = kind_of(row["name"]) if row["name"] != "student_kd" else ("fp32", "", "torch eager")
        out_rows.append(
            {
                "key": f"seed{seed}-{kind}",
                "seed": seed,
                "kind": kind,
                "targets": targets,
                "runtime": runtime,
                "fp32_accuracy": fp32["accuracy"],
                "drop_points": round((fp32["accuracy"] - row["accuracy"]) * 100, 2),
                "size_ratio": round(row["size_bytes"] / fp32["size_bytes"], 4),
                **{c: row.get(c) for c in COLUMNS},
            }
        )
    return out_rows


LABELS = {
    "fp32": "fp32 weights",
    "onnx": "fp32 ONNX",
    "int8": "int8 PTQ, onnxruntime static QDQ",
    "int8_pt2e": "int8 PTQ, torchao PT2E",
    "int8_dynamic": "int8 dynamic PTQ, torchao PT2E",
    "int8_qat": "int8 QAT + KD, torchao PT2E",
    "int8_qat_labels": "int8 QAT hard labels, torchao PT2E",
}


def label(kind: str) -> str:
    if kind in LABELS:
        return LABELS[kind]
    bits, _, rest = kind.partition("_")
    return f"{bits} weights " + {"": "PTQ", "qat": "QAT + KD", "qat_labels": "QAT hard labels"}[rest]


def order_of(kinds) -> list[str]:
    """fp32 first, then int8 files, then low-bit widths from the widest; PTQ before QAT."""
    fixed = list(LABELS)

    def key(kind: str) -> tuple:
        if kind in fixed:
            return (0, fixed.index(kind), "")
        bits, _, rest = kind.partition("_")
        return (1, -int(bits.removeprefix("int")), rest)

    return sorted(dict.fromkeys(kinds), key=key)


def render(rows: pd.DataFrame, spec: dict) -> str:
    seeds = sorted(rows["seed"].unique())
    lines = [
        "# Quantized students",
        "",
        "Made by `python benchmarks/quantize.py` (`benchmarks/quantize.yaml`); one row per seed and file in "
        f"[quantize.csv](quantize.csv). Seeds {', '.join(map(str, seeds))}: for each, the teacher and the distilled "
        "student of params.yaml trained by the real stages, then the real `export` and `quantize` stages. "
        f"QAT: {spec['qat']['epochs']} epochs over the transfer views at lr {spec['qat']['lr']}, with the "
        "distillation objective (KD) or hard labels only. Accuracy on the 1,000 test digits, measured in the "
        "runtime named (onnxruntime for ONNX files; torch for packed low-bit weights, dequantized on load). "
        "Latency: median of the runs, one thread; 'torch oneDNN' is the int8 graph lowered by "
        "`lower_pt2e_quantized_to_x86` at a static batch.",
        "",
        "## Accuracy and size (mean ± std over seeds; drop against the same seed's fp32 student)",
        "",
        "| file | runtime | accuracy | drop (points; negative: a gain) | worst seed's drop | size vs fp32 |",
        "|---|---|---:|---:|---:|---:|",
    ]
    order = order_of(rows["kind"])
    for kind in order:
        part = rows[rows["kind"] == kind]
        acc, drop = part["accuracy"] * 100, part["drop_points"]
        lines.append(
            f"| {label(kind)} | {part['runtime'].iloc[0]} | {acc.mean():.2f} ± {acc.std(ddof=1):.2f} | "
            f"{drop.mean():+.2f} | {drop.max():+.2f} | {part['size_ratio'].mean():.2f}x |"
        )
    lines += ["", "## Low-bit weights: what QAT wins back of the PTQ drop", "",
              "| bits | PTQ drop | QAT + KD drop | QAT hard labels drop | recovered by QAT + KD | by QAT hard labels |",
              "|---:|---:|---:|---:|---:|---:|"]  # fmt: skip
    for bits in spec["low_bits"]:
        drops = {t: rows[rows["kind"] == f"int{bits}{t}"]["drop_points"].mean() for t in ("", "_qat", "_qat_labels")}
        ptq = drops[""]

        def recovered(drop: float, ptq: float = ptq) -> str:
            return f"{(ptq - drop) / ptq * 100:.0f}%" if ptq > 0 else "n/a (no PTQ drop)"

        lines.append(
            f"| {bits} | {ptq:+.2f} | {drops['_qat']:+.2f} | {drops['_qat_labels']:+.2f} | "
            f"{recovered(drops['_qat'])} | {recovered(drops['_qat_labels'])} |"
        )
    lines += ["", "## Latency (ms, median over seeds)", "",
              "| file | onnxruntime b1 | onnxruntime b256 | torch b1 | torch b256 |",
              "|---|---:|---:|---:|---:|"]  # fmt: skip

    def cell(part: pd.DataFrame, column: str) -> str:
        values = part[column].dropna()
        return f"{values.median():.3f}" if len(values) else ""

    for kind in order:
        part = rows[rows["kind"] == kind]
        ort_b1, ort_b256 = cell(part, "latency_ms_b1"), cell(part, "latency_ms_b256")
        if part["runtime"].iloc[0] != "onnxruntime":  # its own latency is torch's
            lines.append(f"| {label(kind)} | | | {ort_b1} | {ort_b256} |")
        else:
            lines.append(
                f"| {label(kind)} | {ort_b1} | {ort_b256} | {cell(part, 'latency_torch_ms_b1')} | "
                f"{cell(part, 'latency_torch_ms_b256')} |"
            )
    lines += ["", "![accuracy against size](quantize.png)", ""]
    if spec.get("reading"):
        lines += ["## Reading", "", spec["reading"].strip(), ""]
    return "\n".join(lines)


def save_plot(rows: pd.DataFrame, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6.5, 4))
    for i, kind in enumerate(order_of(rows["kind"])):
        part = rows[rows["kind"] == kind]
        marker = "o" if kind in ("fp32", "onnx") else "s" if kind.startswith("int8") else "^"
        ax.errorbar(part["size_bytes"].mean() / 1024, part["accuracy"].mean() * 100,
                    yerr=part["accuracy"].std(ddof=1) * 100, fmt=marker, capsize=3, color=plt.cm.tab20(i),
                    label=label(kind))  # fmt: skip
    ax.set_xscale("log")
    ax.set_xlabel("file size (KiB, log)")
    ax.set_ylabel("test accuracy (%)")
    ax.set_title("Distilled MLP student: accuracy against size, mean ± std over seeds")
    ax.legend(fontsize=6, loc="lower right")
    ax.grid(alpha=0.3)
    fig.tight_layout()
    save_png(fig, path)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--spec", type=Path, default=ROOT / "benchmarks" / "quantize.yaml")
    parser.add_argument("--params", type=Path, default=ROOT / "params.yaml")
    parser.add_argument("--work", type=Path, default=ROOT / ".kdflow" / "quantize")
    parser.add_argument("--reports", type=Path, default=ROOT / "reports")
    args = parser.parse_args(argv)
    spec = yaml.safe_load(args.spec.read_text())
    base = read_yaml(args.params.read_text(), source=str(args.params))
    for dotted, value in (spec.get("set") or {}).items():
        set_dotted(base, dotted, value)
    sweep = Sweep(base, args.work.resolve())
    table = RunTable(args.reports / "quantize.csv")
    for seed in spec["seeds"]:
        if table.has(f"seed{seed}-fp32", seed):
            continue
        for row in run_seed(sweep, spec, seed):
            table.add(row)
        print(f"quantize benchmark: seed {seed} done", flush=True)
    rows = table.rows
    save_plot(rows, args.reports / "quantize.png")
    write_text(args.reports / "quantize.md", render(rows, spec))
    print(f"quantize benchmark: {len(rows)} rows -> {args.reports / 'quantize.md'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
