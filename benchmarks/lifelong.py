"""Lifelong updates on the bundled data: every method in every scenario, several seeds.

    python benchmarks/lifelong.py [--spec benchmarks/lifelong.yaml] [--only class ...] [--validation 500 --reports DIR]
    python benchmarks/lifelong.py --spec benchmarks/lifelong_choice.yaml --validation 500

Writes reports/lifelong.csv (one row per run: scenario,method,memory,seed,acc,forgetting),
reports/lifelong_runs.csv (every figure, the accuracy matrix as JSON), reports/lifelong.md and
reports/lifelong.png. Runs already in lifelong_runs.csv are not measured again. The data is the
`prepare` stage's output for params.yaml (made once in --work).

A spec with `variants` (each a name, settings overrides and optionally another student) is a
choice: every variant runs on the validation digits (`--validation` is then required) and the
report is `<spec name>.md` / `<spec name>_runs.csv`, one table of the variants per scenario.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import pandas as pd
import torch
import yaml
from pydantic import TypeAdapter

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from benchmarks.runs import RunTable  # noqa: E402
from kdcore.artifacts import atomic_path, write_text  # noqa: E402
from kdcore.config import ModelSpec, load_params  # noqa: E402
from kdcore.data.prepared import load_meta, load_split  # noqa: E402
from kdcore.data.splits import stratified_split  # noqa: E402
from kdcore.evaluate.plots import save_png  # noqa: E402
from kdcore.lifelong.methods import UpdateSettings  # noqa: E402
from kdcore.lifelong.run import run_stream  # noqa: E402
from kdcore.lifelong.scenarios import StreamData, make_stream  # noqa: E402
from kdcore.models import build_model, count_params  # noqa: E402
from kdcore.stages import get_stage  # noqa: E402

ANCHORS = {  # published class-incremental Split-MNIST figures (ACC), for the report
    "finetune": "about 0.20 (van de Ven et al. 2019)",
    "lwf": "0.23-0.24 (van de Ven et al. 2019; Hsu et al. 2018)",
    "replay": "about 0.90 (van de Ven et al. 2019)",
    "joint": "about 0.98",
}


def stream_data(params_path: Path, work: Path, validation: int = 0) -> tuple[StreamData, object]:
    """The stream's pool (teacher + transfer splits) and test split; with `validation` > 0, that many
    samples of the pool (stratified, seeded) take the test split's place and the rest is the pool,
    so a choice made on them never sees the test split."""
    params = load_params(params_path)
    prepared = work / "prepared"
    params = params.model_copy(update={"paths": params.paths.model_copy(update={"prepared": prepared})})
    if not (prepared / "meta.json").is_file():
        get_stage("prepare")(params)
    meta = load_meta(prepared)
    train = [load_split(prepared, s) for s in ("teacher_train", "transfer")]
    test = load_split(prepared, "test")
    x, y = torch.cat([s.x for s in train]), torch.cat([s.y for s in train])
    test_x, test_y = test.x, test.y
    if validation:
        parts = stratified_split(y, {"pool": len(y) - validation, "validation": validation}, params.seed + 11)
        pool, held = torch.from_numpy(parts["pool"]), torch.from_numpy(parts["validation"])
        x, y, test_x, test_y = x[pool], y[pool], x[held], y[held]
    return StreamData(x, y, test_x, test_y, meta.num_classes, meta.fill), params


def render(rows: pd.DataFrame, spec: dict, student: str, teacher: str, others: pd.DataFrame | None = None) -> str:
    settings = spec["settings"]
    lines = [
        "# Lifelong updates on the bundled data",
        "",
        "Made by `python benchmarks/lifelong.py` (`benchmarks/lifelong.yaml`); one row per run in "
        "[lifelong.csv](lifelong.csv), every figure and accuracy matrix in [lifelong_runs.csv](lifelong_runs.csv). "
        f"{spec['increments']} increments of the 4,000 training digits, each scored on its part of the 1,000 "
        f"test digits; student {student}, teacher (teacher-guided only) {teacher}; "
        f"{settings['steps']} Adam steps per increment (lr {settings['lr']}, {settings['batch_size']} new + "
        f"{settings['replay_batch_size']} replayed samples per step), LwF and teacher terms at T = "
        f"{settings['temperature']}, herding selection. Mean ± standard deviation over the seeds measured "
        f"(of {', '.join(map(str, spec['seeds']))}: the `seeds` column). ACC is the mean accuracy over all "
        "increments after the last; "
        "forgetting is Chaudhry et al.'s (max-based); BWT is backward transfer.",
        "",
    ]
    titles = {
        "class": "Class-incremental (Split-MNIST: 5 increments of 2 digits, no task identity at test)",
        "domain": f"Domain-incremental (increment i rotated by {spec['rotation_step']} x i degrees, all digits)",
        "task": "Task-incremental (Split-MNIST with the increment known at test: 2-way choices)",
    }
    for scenario in spec["scenarios"]:
        part = rows[rows["scenario"] == scenario]
        if not len(part):
            continue
        lines += [f"## {titles.get(scenario, scenario)}", "", "| method | memory | seeds | ACC | forgetting | BWT | "
                  "newest | seconds per run |", "|---|---:|---|---:|---:|---:|---:|---:|"]  # fmt: skip
        for (method, memory), runs in part.groupby(["method", "memory"], sort=False):

            def stat(column: str, runs=runs) -> str:
                values = runs[column]
                spread = f" ± {values.std(ddof=1):.3f}" if len(values) > 1 else ""
                return f"{values.mean():.3f}{spread}"

            seeds = ",".join(str(int(x)) for x in sorted(runs["seed"]))
            lines.append(
                f"| {method} | {memory} | {seeds} | **{stat('acc')}** | {stat('forgetting')} | {stat('bwt')} | "
                f"{stat('newest')} | {runs['seconds'].mean():.0f} |"
            )
        lines.append("")
    if "class" in spec["scenarios"]:
        lines += ["Published class-incremental Split-MNIST anchors (full MNIST, 60,000 digits): "
                  + "; ".join(f"{k} {v}" for k, v in ANCHORS.items()) + ".", ""]  # fmt: skip
    lines += ["![accuracy matrices, seed 0](lifelong.png)", ""]
    if others is not None and len(others):
        lines += [
            "## Other students (same stream, settings and seeds)",
            "",
            "| student | scenario | method | memory | ACC | forgetting |",
            "|---|---|---|---:|---:|---:|",
        ]
        for (name, scenario, method, memory), runs in others.groupby(["student", "scenario", "method", "memory"],
                                                                      sort=False):  # fmt: skip
            acc, forgetting = runs["acc"], runs["forgetting"]
            lines.append(
                f"| {name} | {scenario} | {method} | {memory} | {acc.mean():.3f} ± {acc.std(ddof=1):.3f} "
                f"| {forgetting.mean():.3f} ± {forgetting.std(ddof=1):.3f} |"
            )
        lines.append("")
    return "\n".join(lines)


def render_choice(rows: pd.DataFrame, spec: dict, name: str, validation: int, students: dict[str, str]) -> str:
    """One table per scenario: every variant of every method, mean ± std over the seeds, on the
    validation digits (the test split is not read)."""
    base = spec["settings"]
    lines = [
        f"# Lifelong settings chosen on a validation split ({name})",
        "",
        f"Made by `python benchmarks/lifelong.py --spec benchmarks/{name}.yaml --validation {validation}`; "
        f"every run in [{name}_runs.csv]({name}_runs.csv). {validation} digits held out of the 4,000 training "
        f"digits (stratified) score every run; the test split is not read. Seeds "
        f"{', '.join(map(str, spec['seeds']))}; base settings: " + ", ".join(f"{k} {v}" for k, v in base.items()) + ".",
        "",
        "| variant | changes | student |",
        "|---|---|---|",
    ]
    for variant in spec["variants"]:
        changes = ", ".join(f"{k} {v}" for k, v in (variant.get("settings") or {}).items()) or "none"
        lines.append(f"| {variant['name']} | {changes} | {students[variant['name']]} |")
    lines.append("")
    for scenario in spec["scenarios"]:
        part = rows[rows["scenario"] == scenario]
        if not len(part):
            continue
        lines += [f"## {scenario}", "", "| method | memory | variant | ACC | forgetting | newest |",
                  "|---|---:|---|---:|---:|---:|"]  # fmt: skip
        for (method, memory, variant), runs in part.groupby(["method", "memory", "variant"], sort=False):

            def stat(column: str, runs=runs) -> str:
                values = runs[column]
                spread = f" ± {values.std(ddof=1):.3f}" if len(values) > 1 else ""
                return f"{values.mean():.3f}{spread}"

            lines.append(f"| {method} | {memory} | {variant} | {stat('acc')} | {stat('forgetting')} | "
                         f"{stat('newest')} |")  # fmt: skip
        lines.append("")
    if spec.get("reading"):
        lines += ["## Reading", "", spec["reading"].strip(), ""]
    return "\n".join(lines)


def save_matrices(rows: pd.DataFrame, path: Path, spec: dict) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    first = rows[rows["seed"] == rows["seed"].min()]
    runs = list(first.itertuples())
    scenarios = [s for s in spec["scenarios"] if s in set(first["scenario"])]
    methods = list(dict.fromkeys((r.method, r.memory) for r in runs))
    fig, axes = plt.subplots(len(scenarios), len(methods), figsize=(1.9 * len(methods), 2.0 * len(scenarios)),
                             squeeze=False)  # fmt: skip
    for r in runs:
        ax = axes[scenarios.index(r.scenario)][methods.index((r.method, r.memory))]
        matrix = json.loads(r.matrix)
        ax.imshow(matrix, vmin=0, vmax=1, cmap="viridis")
        for i, row in enumerate(matrix):
            for j, value in enumerate(row):
                ax.text(j, i, f"{value * 100:.0f}", ha="center", va="center", fontsize=6,
                        color="white" if value < 0.6 else "black")  # fmt: skip
        ax.set_xticks([])
        ax.set_yticks([])
        ax.set_title(f"{r.method}{f' {r.memory}' if r.memory else ''}", fontsize=7)
        if methods.index((r.method, r.memory)) == 0:
            ax.set_ylabel(f"{r.scenario}\nafter increment i", fontsize=7)
    fig.suptitle("R[i][j]: accuracy (%) after increment i (row) on increment j's test data (column)", fontsize=8)
    fig.tight_layout()
    save_png(fig, path)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--spec", type=Path, default=ROOT / "benchmarks" / "lifelong.yaml")
    parser.add_argument("--params", type=Path, default=ROOT / "params.yaml")
    parser.add_argument("--work", type=Path, default=ROOT / ".kdflow" / "lifelong")
    parser.add_argument("--reports", type=Path, default=ROOT / "reports")
    parser.add_argument("--only", nargs="*", help="scenarios to measure (default: all in the spec)")
    parser.add_argument("--validation", type=int, default=0,
                        help="score on this many held-out training digits, not the test split")  # fmt: skip
    parser.add_argument("--report-only", action="store_true", help="render the runs already measured; run none")
    args = parser.parse_args(argv)
    spec = yaml.safe_load(args.spec.read_text())
    variants = spec.get("variants")
    if variants and not args.validation:
        parser.error(f"{args.spec.name} is a choice (it has variants): give --validation N, not the test split")
    data, params = stream_data(args.params, args.work, args.validation)
    torch.set_num_threads(params.cpu_threads)
    meta = load_meta(params.paths.prepared)
    teacher_spec = next(iter(params.teachers.values())).model
    model_spec = TypeAdapter(ModelSpec)
    # a choice runs its variants; a benchmark one student for every method (the spec's, else params.yaml's)
    runs = variants or [{"name": "", "student": spec.get("student"), "tag": spec.get("student_tag", "")}]
    student_specs = {
        v["name"]: model_spec.validate_python(v["student"]) if v.get("student") else params.student.model for v in runs
    }

    def make_teacher():
        return build_model(teacher_spec, meta.input_shape, meta.num_classes)

    runs_csv = args.reports / (f"{args.spec.stem}_runs.csv" if variants else "lifelong_runs.csv")
    table = RunTable(runs_csv)
    for seed in [] if args.report_only else spec["seeds"]:
        for scenario in spec["scenarios"]:
            if args.only and scenario not in args.only:
                continue
            stream = make_stream(scenario, data, spec["increments"], seed, spec["rotation_step"])
            for variant in runs:
                settings = UpdateSettings(**{**spec["settings"], **(variant.get("settings") or {})})
                student_spec = student_specs[variant["name"]]

                def make_student(student_spec=student_spec):
                    return build_model(student_spec, meta.input_shape, meta.num_classes)

                for method, memory in spec["methods"]:
                    tag = f"-{variant['tag']}" if variant.get("tag") else ""
                    key = f"{variant['name'] + '-' if variants else ''}{scenario}-{method}-{memory}{tag}"
                    if table.has(key, seed):
                        continue
                    started = time.perf_counter()
                    result = run_stream(stream, method, settings, mode=scenario, num_classes=data.num_classes,
                                        make_student=make_student, make_teacher=make_teacher, seed=seed,
                                        memory=memory, selection=spec["selection"])  # fmt: skip
                    seconds = time.perf_counter() - started
                    print(f"lifelong: {key} seed {seed}: ACC {result.metrics['acc']:.3f}, forgetting "
                          f"{result.metrics['forgetting']:.3f} ({seconds:.0f} s)", flush=True)  # fmt: skip
                    extra = (
                        {"variant": variant["name"]}
                        if variants
                        else {"student": variant.get("tag") or params.student.model.name}
                    )
                    matrix = json.dumps([[round(a, 4) for a in row] for row in result.matrix])
                    table.add({"key": key, "scenario": scenario, "method": method, "memory": memory, "seed": seed,
                               **extra, **{k: round(v, 4) for k, v in result.metrics.items()},
                               "seconds": round(seconds, 1), "matrix": matrix})  # fmt: skip
    rows = table.rows
    if variants:
        students = {
            name: f"{s.name} ({count_params(build_model(s, meta.input_shape, meta.num_classes)):,} parameters)"
            for name, s in student_specs.items()
        }
        out = args.reports / f"{args.spec.stem}.md"
        write_text(out, render_choice(rows, spec, args.spec.stem, args.validation, students))
        print(f"lifelong: {len(rows)} runs -> {out}")
        return 0
    default = params.student.model.name  # runs made before the spec named a student
    rows["student"] = rows["student"].fillna(default) if "student" in rows else default
    with atomic_path(args.reports / "lifelong.csv") as tmp:
        rows[["scenario", "method", "memory", "seed", "acc", "forgetting", "student"]].to_csv(tmp, index=False)
    tag = runs[0].get("tag") or params.student.model.name
    shipped = build_model(student_specs[""], meta.input_shape, meta.num_classes)
    student = f"{tag}: {student_specs[''].name} ({count_params(shipped):,} parameters)"
    teacher = f"{teacher_spec.name} ({count_params(make_teacher()):,} parameters)"
    main_rows, others = rows[rows["student"] == tag], rows[rows["student"] != tag]
    save_matrices(main_rows, args.reports / "lifelong.png", spec)
    write_text(args.reports / "lifelong.md", render(main_rows, spec, student, teacher, others))
    print(f"lifelong: {len(rows)} runs -> {args.reports / 'lifelong.md'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
