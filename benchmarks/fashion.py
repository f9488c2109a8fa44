"""Fashion-MNIST end to end with its published test split, and the top-K teacher-output cache on it.

    python benchmarks/fashion.py --idx /usr/share/datasets/fashion-mnist [--spec benchmarks/fashion.yaml]
                                 [--work .kdflow/fashion] [--only KEY ...] [--device cpu|cuda]

Each (run, seed) of the spec goes through the real stages (`python -m kdcore.experiments.sweep`, one process per
run, one after another); teachers, scratch students and synthetic pools are shared between runs and reruns.
Every finished run is appended to reports/fashion_runs.csv at once, and runs already there are not measured
again; a run that a stage refused (a data check) is a row too, with the stage's line under `failure`.
benchmarks/scale_report.py turns the rows into reports/scale.md. The data is read from `--idx`
(never fetched): Debian's `dataset-fashion-mnist` puts it in /usr/share/datasets/fashion-mnist/.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from benchmarks.runs import RunTable, measure  # noqa: E402


def planned_runs(spec: dict, idx: Path) -> list[dict]:
    """(key, label, overrides, seed) of every run, seed-major so every run has a first result early."""
    runs = []
    for seed in spec["seeds"]:
        for run in spec["runs"]:
            overrides = {**spec.get("base", {}), "data.path": str(idx), **(run.get("set") or {})}
            runs.append({"key": run["name"], "label": run["label"], "overrides": overrides, "seed": seed})
    return runs


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--idx", type=Path, required=True, help="directory of the Fashion-MNIST IDX files")
    parser.add_argument("--spec", type=Path, default=ROOT / "benchmarks" / "fashion.yaml")
    parser.add_argument("--params", type=Path, default=ROOT / "params.yaml")
    parser.add_argument("--work", type=Path, default=ROOT / ".kdflow" / "fashion")
    parser.add_argument("--reports", type=Path, default=ROOT / "reports")
    parser.add_argument("--only", nargs="*", help="run keys to measure (default: all)")
    parser.add_argument("--device", default="cpu", help="params `device` of every stage (default cpu)")
    args = parser.parse_args(argv)
    if not args.idx.is_dir():
        raise SystemExit(f"fashion: error: --idx {args.idx}: no such directory (apt-get install dataset-fashion-mnist)")
    spec = yaml.safe_load(args.spec.read_text())
    table = RunTable(args.reports / "fashion_runs.csv")
    todo = [r for r in planned_runs(spec, args.idx.resolve()) if not (args.only and r["key"] not in args.only)]
    for planned in todo:
        if table.has(planned["key"], planned["seed"]):
            continue
        print(f"fashion: {planned['key']} seed {planned['seed']}", flush=True)
        try:
            row = measure(planned["key"], planned["overrides"], planned["seed"], args.work.resolve(), args.params,
                          device=args.device, label=planned["label"])  # fmt: skip
        except SystemExit as failed:  # a run a stage refused (a data check): a row that says why, and go on
            row = {"key": planned["key"], "seed": planned["seed"], "label": planned["label"], "failure": str(failed)}
        table.add(row)
    print(f"fashion: {len(table.rows)} runs -> {args.reports / 'fashion_runs.csv'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
