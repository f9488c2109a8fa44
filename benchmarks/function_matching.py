"""Mixup / cutmix views against shifts alone, chosen on a validation split and confirmed on other seeds.

    python benchmarks/function_matching.py [--spec benchmarks/function_matching.yaml] [--jobs 2]

Writes reports/function_matching.csv (every run) and reports/function_matching.md. Each run is a DVC
experiment of this project (`function_matching-<phase>-<variant>-s<seed>`, listed by `dvc exp show`),
run by `--jobs` DVC queue workers; `--in-process` runs them one at a time through kdcore.experiments.sweep
instead. Finished runs are kept and not measured again. Gains are in points over the scratch student
of the same run (same student, views, epochs).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from benchmarks.runs import RunTable, measure, measure_queued  # noqa: E402
from kdcore.artifacts import write_text  # noqa: E402


def mean_gain(rows, key: str, phase: str, column: str, scratch: str) -> tuple[float, list[float]]:
    chosen = rows[(rows["variant"] == key) & (rows["phase"] == phase)]
    gains = ((chosen[column] - chosen[scratch]) * 100).round(2).tolist()
    return (sum(gains) / len(gains) if gains else float("nan")), gains


def render(rows, spec: dict, best: str) -> str:
    labels = {v["name"]: v["label"] for v in spec["variants"]}
    lines = [
        "# Function matching: mixup / cutmix views against shifts alone",
        "",
        "Made by `python benchmarks/function_matching.py` (`benchmarks/function_matching.yaml`); every run in "
        "[function_matching.csv](function_matching.csv). Default teacher, MLP student, 32 views per sample, "
        "30 epochs, Hinton KD (0.5 CE + 0.5 KD, T=2); gain in points over the scratch student of the same run.",
        "",
        f"## 1. Choice on the validation split (seeds {', '.join(map(str, spec['choose']['seeds']))}; "
        "teacher split 2,500, validation 500)",
        "",
        "| views | validation gain (mean) | per seed | test gain (not used to choose) |",
        "|---|---:|---|---:|",
    ]
    for name in labels:
        val, per_seed = mean_gain(rows, name, "choose", "val_accuracy", "val_scratch_accuracy")
        test, _ = mean_gain(rows, name, "choose", "accuracy", "scratch_accuracy")
        mark = " (chosen)" if name == best else ""
        lines.append(
            f"| {labels[name]}{mark} | {val:+.2f} | {', '.join(f'{g:+.1f}' for g in per_seed)} | {test:+.2f} |"
        )
    lines += [
        "",
        f"## 2. Confirmation on seeds {', '.join(map(str, spec['confirm']['seeds']))} (shipped splits, test accuracy)",
        "",
        "| views | test gain (mean) | per seed | student accuracy | scratch accuracy |",
        "|---|---:|---|---:|---:|",
    ]
    for name in dict.fromkeys(["shifts", best]):
        gain, per_seed = mean_gain(rows, name, "confirm", "accuracy", "scratch_accuracy")
        chosen = rows[(rows["variant"] == name) & (rows["phase"] == "confirm")]
        lines.append(
            f"| {labels[name]} | {gain:+.2f} | {', '.join(f'{g:+.1f}' for g in per_seed)} | "
            f"{chosen['accuracy'].mean() * 100:.2f}% | {chosen['scratch_accuracy'].mean() * 100:.2f}% |"
        )
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--spec", type=Path, default=ROOT / "benchmarks" / "function_matching.yaml")
    parser.add_argument("--params", type=Path, default=ROOT / "params.yaml")
    parser.add_argument("--work", type=Path, default=ROOT / ".kdflow" / "views")
    parser.add_argument("--reports", type=Path, default=ROOT / "reports")
    parser.add_argument("--jobs", type=int, default=1, help="DVC queue workers at once")
    parser.add_argument(
        "--in-process", action="store_true", help="kdcore.experiments.sweep, one run at a time, in --work"
    )
    args = parser.parse_args(argv)
    spec = yaml.safe_load(args.spec.read_text())
    table = RunTable(args.reports / "function_matching.csv")
    work = args.work.resolve()

    def run(phase: str, variants: list[dict], seeds: list[int]) -> None:
        """Every (variant, seed) of a phase not in the table yet: variant by variant, so that parallel
        workers start on different seeds and later variants find their teacher in the run cache."""
        todo = [
            (f"{phase}-{v['name']}", {**(spec[phase].get("set") or {}), **(v.get("set") or {})}, seed,
             {"phase": phase, "variant": v["name"]})
            for v in variants
            for seed in seeds
            if not table.has(f"{phase}-{v['name']}", seed)
        ]  # fmt: skip
        if not args.in_process:
            for row in measure_queued(todo, args.spec.stem, args.jobs, args.params):
                table.add(row)
            return
        for key, overrides, seed, extra in todo:
            print(f"function matching: {key} seed {seed}", flush=True)
            table.add(measure(key, overrides, seed, work, args.params, **extra))

    run("choose", spec["variants"], spec["choose"]["seeds"])
    names = [v["name"] for v in spec["variants"]]
    best = max(names, key=lambda n: mean_gain(table.rows, n, "choose", "val_accuracy", "val_scratch_accuracy")[0])
    print(f"function matching: chosen on the validation split: {best}", flush=True)
    run("confirm", [v for v in spec["variants"] if v["name"] in ("shifts", best)], spec["confirm"]["seeds"])
    write_text(args.reports / "function_matching.md", render(table.rows, spec, best))
    print(f"function matching: -> {args.reports / 'function_matching.md'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
