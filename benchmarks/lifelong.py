"""Lifelong updates on the bundled data: every method in every scenario, several seeds.

    python benchmarks/lifelong.py [--spec benchmarks/lifelong.yaml] [--only class ...] [--validation 500 --reports DIR]

Writes reports/lifelong.csv (one row per run: scenario,method,memory,seed,acc,forgetting),
reports/lifelong_runs.csv (every figure, the accuracy matrix as JSON), reports/lifelong.md and
reports/lifelong.png. Runs already in lifelong_runs.csv are not measured again. The data is the
`prepare` stage's output for params.yaml (made once in --work).
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

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from benchmarks.runs import RunTable  # noqa: E402
from kdcore.artifacts import atomic_path, write_text  # noqa: E402
from kdcore.config import load_params  # noqa: E402
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


def render(rows: pd.DataFrame, spec: dict, student: str, teacher: str) -> str:
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
        f"{settings['temperature']}, herding selection. Mean ± standard deviation over seeds "
        f"{', '.join(map(str, spec['seeds']))}. ACC is the mean accuracy over all increments after the last; "
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
        lines += [f"## {titles.get(scenario, scenario)}", "", "| method | memory | ACC | forgetting | BWT | newest "
                  "| seconds per run |", "|---|---:|---:|---:|---:|---:|---:|"]  # fmt: skip
        for (method, memory), runs in part.groupby(["method", "memory"], sort=False):

            def stat(column: str, runs=runs) -> str:
                values = runs[column]
                spread = f" ± {values.std(ddof=1):.3f}" if len(values) > 1 else ""
                return f"{values.mean():.3f}{spread}"

            lines.append(
                f"| {method} | {memory} | **{stat('acc')}** | {stat('forgetting')} | {stat('bwt')} | "
                f"{stat('newest')} | {runs['seconds'].mean():.0f} |"
            )
        lines.append("")
    if "class" in spec["scenarios"]:
        lines += ["Published class-incremental Split-MNIST anchors (full MNIST, 60,000 digits): "
                  + "; ".join(f"{k} {v}" for k, v in ANCHORS.items()) + ".", ""]  # fmt: skip
    lines += ["![accuracy matrices, seed 0](lifelong.png)", ""]
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
    args = parser.parse_args(argv)
    spec = yaml.safe_load(args.spec.read_text())
    data, params = stream_data(args.params, args.work, args.validation)
    torch.set_num_threads(params.cpu_threads)
    meta = load_meta(params.paths.prepared)
    teacher_spec = next(iter(params.teachers.values())).model

    def make_student():
        return build_model(params.student.model, meta.input_shape, meta.num_classes)

    def make_teacher():
        return build_model(teacher_spec, meta.input_shape, meta.num_classes)

    settings = UpdateSettings(**spec["settings"])
    table = RunTable(args.reports / "lifelong_runs.csv")
    for seed in spec["seeds"]:
        for scenario in spec["scenarios"]:
            if args.only and scenario not in args.only:
                continue
            stream = make_stream(scenario, data, spec["increments"], seed, spec["rotation_step"])
            for method, memory in spec["methods"]:
                key = f"{scenario}-{method}-{memory}"
                if table.has(key, seed):
                    continue
                started = time.perf_counter()
                result = run_stream(stream, method, settings, mode=scenario, num_classes=data.num_classes,
                                    make_student=make_student, make_teacher=make_teacher, seed=seed, memory=memory,
                                    selection=spec["selection"])  # fmt: skip
                seconds = time.perf_counter() - started
                print(f"lifelong: {key} seed {seed}: ACC {result.metrics['acc']:.3f}, forgetting "
                      f"{result.metrics['forgetting']:.3f} ({seconds:.0f} s)", flush=True)  # fmt: skip
                table.add({"key": key, "scenario": scenario, "method": method, "memory": memory, "seed": seed,
                           **{k: round(v, 4) for k, v in result.metrics.items()}, "seconds": round(seconds, 1),
                           "matrix": json.dumps([[round(a, 4) for a in row] for row in result.matrix])})  # fmt: skip
    rows = table.rows
    with atomic_path(args.reports / "lifelong.csv") as tmp:
        rows[["scenario", "method", "memory", "seed", "acc", "forgetting"]].to_csv(tmp, index=False)
    student = f"{params.student.model.name} ({count_params(make_student()):,} parameters)"
    teacher = f"{teacher_spec.name} ({count_params(make_teacher()):,} parameters)"
    save_matrices(rows, args.reports / "lifelong.png", spec)
    write_text(args.reports / "lifelong.md", render(rows, spec, student, teacher))
    print(f"lifelong: {len(rows)} runs -> {args.reports / 'lifelong.md'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
