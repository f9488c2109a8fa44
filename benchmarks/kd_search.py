"""Search for a configuration in which distillation helps: runs the real stages for each variant
and seed and prints test accuracy of teacher, scratch and distilled student.

    python benchmarks/kd_search.py benchmarks/kd_search.yaml --seeds 100 101 102 --out benchmarks/results/kd_search.csv

The YAML file lists variants, each a name and dotted overrides of params.yaml. Each (variant, seed)
is a DVC experiment of this project (`kd_search-<variant>-s<seed>`, listed by `dvc exp show`), run
by `--jobs` DVC queue workers; stages whose inputs did not change between variants (the teacher,
the transfer set, the scratch student) come back from DVC's run cache. `--in-process` runs them one
at a time through kdcore.experiments.sweep instead, reusing stage outputs in `--work`.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import pandas as pd
import yaml

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from benchmarks.runs import measure_queued  # noqa: E402
from kdcore.experiments.sweep import Sweep, plan  # noqa: E402


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("grid", type=Path)
    parser.add_argument("--params", type=Path, default=Path("params.yaml"))
    parser.add_argument("--seeds", type=int, nargs="+", default=[100, 101, 102])
    parser.add_argument("--work", type=Path, default=Path(".kdflow/search"))
    parser.add_argument("--out", type=Path, default=Path("benchmarks/results/kd_search.csv"))
    parser.add_argument("--jobs", type=int, default=1, help="DVC queue workers at once")
    parser.add_argument(
        "--in-process", action="store_true", help="kdcore.experiments.sweep, one run at a time, in --work"
    )
    args = parser.parse_args()

    variants = yaml.safe_load(args.grid.read_text())["variants"]
    if args.in_process:
        sweep = Sweep(yaml.safe_load(args.params.read_text()), args.work)
        rows = []
        for name, overrides, seed in plan(variants, args.seeds):
            row = sweep.run(name, overrides, seed)
            rows.append(row)
            print(row, file=sys.stderr, flush=True)
            pd.DataFrame(rows).to_csv(args.out, index=False)
    else:
        runs = [(v["name"], dict(v.get("set") or {}), seed, {}) for v in variants for seed in args.seeds]
        rows = measure_queued(runs, args.grid.stem, args.jobs, args.params)
        pd.DataFrame(rows).to_csv(args.out, index=False)
    frame = pd.DataFrame(rows)
    summary = frame.groupby("method", sort=False).agg(
        teacher=("teacher_accuracy", "mean"),
        scratch=("scratch_accuracy", "mean"),
        kd=("accuracy", "mean"),
        gain=("gain_points", "mean"),
        gain_min=("gain_points", "min"),
        gain_max=("gain_points", "max"),
        student_params=("student_params", "first"),
    )
    print(summary.round(4).to_string())
    return 0


if __name__ == "__main__":
    sys.exit(main())
