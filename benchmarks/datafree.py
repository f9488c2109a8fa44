"""Data-free distillation on the default data: reports/datafree.md, reports/datafree.csv, reports/datafree.png.

    python benchmarks/datafree.py [--spec benchmarks/datafree.yaml] [--work .kdflow/datafree]
                                  [--only KEY ...] [--jobs N]

Each (run, seed) of the spec goes through the real stages (`python -m kdcore.experiments.sweep`, one process per
run, one after another so that the synthesis times are not shared with other work; `--jobs N` runs N
at a time, for runs whose synthesis is cached or negligible). Teachers, scratch students and
synthetic pools are reused between runs and reruns. Every finished run is appended to
reports/datafree_runs.csv at once (all its figures), and runs already there are not measured again;
reports/datafree.csv holds one row per run: method,images,steps,seed,accuracy,seconds (accuracy as a
fraction, seconds = the synthesize stage's wall time on this machine), then the student's
architecture (student).
"""

from __future__ import annotations

import argparse
import sys
import threading
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pandas as pd
import yaml

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from benchmarks.runs import RunTable, measure  # noqa: E402
from kdcore.artifacts import atomic_path, write_text  # noqa: E402
from kdcore.evaluate.plots import save_png  # noqa: E402

COLUMNS = ["method", "images", "steps", "seed", "accuracy", "seconds", "student"]


def planned_runs(spec: dict) -> list[dict]:
    """(key, label, overrides, seed) of every run, in order; the key names the run in the CSVs (a run
    with its own student has the student's name in front: `cnn_real`, `cnn_inversion_4096x300`)."""
    runs = []
    for run in spec["runs"]:
        overrides = {**spec.get("base", {}), **(run.get("set") or {})}
        images, steps = overrides.get("synth.images", 4096), overrides.get("synth.steps", 300)
        key = run["name"] if run["name"] == "real" else f"{run['name']}_{images}x{steps}"
        if "student.model" in overrides:
            key = f"{overrides['student.model']['name']}_{key}"
        for seed in run["seeds"]:
            runs.append({"key": key, "label": run["label"], "overrides": overrides, "seed": seed})
    return runs


def short_rows(full: pd.DataFrame) -> pd.DataFrame:
    """The one-row-per-run table: method,images,steps,seed,accuracy,seconds,student."""
    method = full["synth_method"].fillna("").replace("", "real")
    images = full["transfer_real_samples"] + full["transfer_synthetic_samples"]
    return pd.DataFrame(
        {
            "method": method,
            "images": images.astype(int),
            "steps": full["synth_steps"].where(~method.isin(["real", "noise"]), 0).astype(int),
            "seed": full["seed"].astype(int),
            "accuracy": full["accuracy"],
            "seconds": full["synthesize_s"].round(1),
            "student": full["student"],
        }
    )[COLUMNS]


def student_of(rows: pd.DataFrame) -> str:
    return f"{rows['student'].iloc[0].upper()}, {int(rows['student_params'].iloc[0]):,}"


def render(full: pd.DataFrame, spec_path: Path, notes: list[str] | None = None) -> str:
    grouped = full.groupby(["key", "label"], sort=False)
    lines = [
        "# Data-free distillation on the default data",
        "",
        f"Made by `python benchmarks/datafree.py` from `{spec_path.name}`; one row per run in "
        "[datafree.csv](datafree.csv), every figure of every run in [datafree_runs.csv](datafree_runs.csv). "
        "The teacher is the default CNN (421,738 parameters); each row names its student and its parameters. "
        "Accuracy is on the test split of the run's seed (1,000 real digits); synthesis time is the "
        "`synthesize` stage's wall time with the row's `cpu_threads` on the 2-core machine.",
        "",
        "| transfer set | student (parameters) | seeds | threads | student test accuracy | per seed | synthesis "
        "| student training | teacher | scratch student |",
        "|---|---|---|---:|---:|---|---:|---:|---:|---:|",
    ]
    for (_, label), rows in grouped:
        rows = rows.sort_values("seed")
        acc = rows["accuracy"] * 100
        spread = f" ± {acc.std(ddof=1):.2f}" if len(rows) > 1 else ""
        per_seed = ", ".join(f"{a:.1f}" for a in acc)
        threads = ", ".join(str(int(t)) for t in rows["cpu_threads"].unique())
        lines.append(
            f"| {label} | {student_of(rows)} | {', '.join(str(s) for s in rows['seed'])} | {threads} | "
            f"**{acc.mean():.2f}%**{spread} | {per_seed} | "
            f"{rows['synthesize_s'].mean() / 60:.1f} min | {rows['distill_s'].mean():.0f} s | "
            f"{rows['teacher_accuracy'].mean() * 100:.2f}% | {rows['scratch_accuracy'].mean() * 100:.2f}% |"
        )
    lines += ["", "![test accuracy against synthesis time](datafree.png)", ""]
    if notes:
        lines += ["## Notes", "", *[f"- {note.strip()}" for note in notes], ""]
    return "\n".join(lines)


def save_plot(full: pd.DataFrame, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7.2, 4.6))
    markers = {"mlp": "o", "cnn": "^"}
    for student, rows_of in full.groupby("student", sort=False):
        scratch = rows_of["scratch_accuracy"].mean() * 100
        ax.axhline(scratch, color="gray", ls=":", lw=1, label=f"{student.upper()} scratch student, real labels (mean)")
        for (key, label), rows in rows_of.groupby(["key", "label"], sort=False):
            if key.endswith("real"):
                ax.axhline(rows["accuracy"].mean() * 100, color="green", ls="--" if student == "mlp" else "-.",
                           lw=1, label=f"{student.upper()}: {label} (mean)")  # fmt: skip
                continue
            ax.scatter(rows["synthesize_s"] / 60, rows["accuracy"] * 100, label=f"{student.upper()}: {label}", s=22,
                       marker=markers.get(student, "s"))  # fmt: skip
    ax.set_xlabel("synthesis time (min, the row's cpu_threads on 2 cores)")
    ax.set_ylabel("student test accuracy (%)")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=6, loc="lower right")
    fig.tight_layout()
    save_png(fig, path)


def check_runs(runs: list[dict], params: Path, work: Path) -> None:
    """Every run's params validated before the first run starts: a mistake in the spec stops the
    benchmark with one line naming the run and the key, not hours later."""
    from kdcore.config import read_yaml
    from kdcore.errors import KdflowError
    from kdcore.experiments.sweep import Sweep

    try:
        sweep = Sweep(read_yaml(params.read_text(), source=str(params)), work)
        for run in runs:
            sweep.params_for(run["overrides"], run["seed"], work / "runs" / run["key"] / f"seed{run['seed']}")
    except KdflowError as err:
        raise SystemExit(f"datafree: error: {err}") from None


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--spec", type=Path, default=ROOT / "benchmarks" / "datafree.yaml")
    parser.add_argument("--params", type=Path, default=ROOT / "params.yaml")
    parser.add_argument("--work", type=Path, default=ROOT / ".kdflow" / "datafree")
    parser.add_argument("--reports", type=Path, default=ROOT / "reports")
    parser.add_argument("--only", nargs="*", help="run keys to measure (default: all)")
    parser.add_argument("--jobs", type=int, default=1, help="runs at a time (their synthesis times overlap)")
    args = parser.parse_args(argv)
    spec = yaml.safe_load(args.spec.read_text())
    table = RunTable(args.reports / "datafree_runs.csv")
    lock = threading.Lock()
    todo = [r for r in planned_runs(spec) if not (args.only and r["key"] not in args.only)]
    todo = [r for r in todo if not table.has(r["key"], r["seed"])]
    check_runs(todo, args.params, args.work.resolve())

    def run(planned: dict) -> None:
        print(f"datafree: {planned['key']} seed {planned['seed']}", flush=True)
        row = measure(planned["key"], planned["overrides"], planned["seed"], args.work.resolve(), args.params,
                      label=planned["label"], cpu_threads=planned["overrides"].get("cpu_threads"))  # fmt: skip
        with lock:
            table.add(row)

    with ThreadPoolExecutor(max_workers=max(1, args.jobs)) as pool:
        list(pool.map(run, todo))
    done = table.rows
    if not len(done):
        return 0
    with atomic_path(args.reports / "datafree.csv") as tmp:
        short_rows(done).to_csv(tmp, index=False)
    save_plot(done, args.reports / "datafree.png")
    write_text(args.reports / "datafree.md", render(done, args.spec.resolve(), spec.get("notes")))
    print(f"datafree: {len(done)} runs -> {args.reports / 'datafree.md'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
