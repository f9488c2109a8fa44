"""DeepInversion settings chosen on a validation split and confirmed on other seeds.

    python benchmarks/synth_settings.py [--spec benchmarks/synth_settings.yaml] [--synth-device cuda] [--jobs N]

Writes reports/synth_settings.csv (every run) and reports/synth_settings.md. Runs go through the real
stages (`python -m kdcore.sweep`); finished runs are kept and not measured again. With `--jobs N` the
runs of a phase go N at a time once each seed's teacher exists (its first run trains it), so the
synthesis times of parallel runs are not comparable with benchmarks/datafree.py's.

The choice may screen (`choose.screen: {seeds, keep}`): every variant runs on the screening seeds,
and only the `keep` best by validation accuracy run on the other seeds of `choose.seeds`; the choice
is the best mean over all of them. Rows are kept per synthesis device: runs whose synthesis ran on
another device stay in the CSV but take no part in the choice or the report.
"""

from __future__ import annotations

import argparse
import re
import sys
import threading
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from benchmarks.function_matching import mean_gain  # noqa: E402
from benchmarks.runs import RunTable, measure  # noqa: E402
from kdcore.artifacts import write_text  # noqa: E402


def mean_of(rows, variant: str, phase: str, column: str, seeds: list[int] | None = None) -> tuple[float, list[float]]:
    """Mean and per-seed values in points (over `seeds` if given); the mean is NaN (never chosen) if a seed failed."""
    chosen = rows[(rows["variant"] == variant) & (rows["phase"] == phase)].sort_values("seed")
    if seeds is not None:
        chosen = chosen[chosen["seed"].isin(seeds)]
    values = (chosen[column] * 100).round(2).tolist()
    return (sum(values) / len(values) if values else float("nan")), values


def failures(rows, variant: str, phase: str) -> str:
    if "failed" not in rows:
        return ""
    failed = rows[(rows["variant"] == variant) & (rows["phase"] == phase) & rows["failed"].notna()]
    # "<key> seed N failed (exit 3): <key> seed N: <stage>: <reason>; report: <path>" -> "seed N: <stage>: <reason>"
    return "; ".join(
        f"seed {int(r.seed)}: " + re.sub(r"; report: .*$", "", str(r.failed).split(f" seed {int(r.seed)}: ")[-1])
        for r in failed.itertuples()
    )


def on_device(rows, synth_device: str):
    """The rows whose synthesis ran on `synth_device` (all rows of a table that predates the column)."""
    if not len(rows) or "synth_device" not in rows:
        return rows
    return rows[rows["synth_device"].fillna(synth_device) == synth_device]


def screened(rows, names: list[str], screen: dict | None) -> list[str]:
    """The variants that go on past the screen: the `keep` best by mean validation accuracy on its
    seeds (a variant with a failed seed never goes on); all of them without a screen."""
    if not screen:
        return names
    scores = {n: mean_of(rows, n, "choose", "val_accuracy", screen["seeds"])[0] for n in names}
    ranked = sorted((n for n in names if scores[n] == scores[n]), key=scores.get, reverse=True)  # NaN: failed
    return ranked[: screen["keep"]]


def render(rows, spec: dict, best: str, device: str, synth_device: str) -> str:
    labels = {v["name"]: v["label"] for v in spec["variants"]}
    shipped = spec["variants"][0]["name"]
    choose, confirm = spec["choose"]["seeds"], spec["confirm"]["seeds"]
    images, steps = spec["base"]["synth.images"], spec["base"]["synth.steps"]
    screen = spec["choose"].get("screen")
    survivors = screened(rows, list(labels), screen)
    lines = [
        "# DeepInversion settings: chosen on a validation split",
        "",
        "Made by `python benchmarks/synth_settings.py` (`benchmarks/synth_settings.yaml`); every run in "
        f"[synth_settings.csv](synth_settings.csv); synthesis on `{synth_device}`, the other stages on `{device}`. "
        "Default teacher, MLP student, "
        f"{images:,} synthetic images x {steps} steps, KD only (T=4): the student sees no real image; real "
        "digits only score it.",
        "",
        f"## 1. Choice on the validation split (seeds {', '.join(map(str, choose))}; teacher split 2,500, "
        "validation 500)",
        "",
        "| setting | validation accuracy (mean) | per seed | test accuracy (not used to choose) |",
        "|---|---:|---|---:|",
    ]
    if screen:
        lines[-2:-2] = [
            f"Every setting ran on seed(s) {', '.join(map(str, screen['seeds']))}; the {screen['keep']} best by "
            "validation accuracy went on to the other seeds, and the best mean over all of them is chosen. "
            "A screened-out setting's mean is over the screening seeds only.",
            "",
        ]
    for name in labels:
        val, per_seed = mean_of(rows, name, "choose", "val_accuracy")
        test, _ = mean_of(rows, name, "choose", "accuracy")
        mark = " (chosen)" if name == best else "" if name in survivors else " (screened out)"
        if failed := failures(rows, name, "choose"):
            lines.append(f"| {labels[name]} | failed | {failed} | |")
            continue
        lines.append(f"| {labels[name]}{mark} | {val:.2f}% | {', '.join(f'{v:.1f}' for v in per_seed)} | {test:.2f}% |")
    if spec.get("excluded"):
        lines += ["", "Left out of the search:"]
        lines += [f"- {v['label']}: {v['reason']}." for v in spec["excluded"]]
    lines += [
        "",
        f"## 2. Confirmation on seeds {', '.join(map(str, confirm))} (shipped splits, test accuracy)",
        "",
        "| setting | test accuracy (mean) | per seed | gain over scratch (points) |",
        "|---|---:|---|---:|",
    ]
    for name in dict.fromkeys([shipped, best]):
        test, per_seed = mean_of(rows, name, "confirm", "accuracy")
        gain, _ = mean_gain(rows, name, "confirm", "accuracy", "scratch_accuracy")
        if not per_seed:
            lines.append(f"| {labels[name]} | not run yet | | |")
            continue
        lines.append(f"| {labels[name]} | {test:.2f}% | {', '.join(f'{v:.1f}' for v in per_seed)} | {gain:+.2f} |")
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--spec", type=Path, default=ROOT / "benchmarks" / "synth_settings.yaml")
    parser.add_argument("--params", type=Path, default=ROOT / "params.yaml")
    parser.add_argument("--work", type=Path, default=ROOT / ".kdflow" / "synth_settings")
    parser.add_argument("--reports", type=Path, default=ROOT / "reports")
    parser.add_argument("--device", default="cpu", help="params `device` of every stage (cpu, cuda)")
    parser.add_argument("--synth-device", help="params `device` of the synthesize stage (default: --device)")
    parser.add_argument("--jobs", type=int, default=1, help="runs at a time once a seed's teacher exists")
    parser.add_argument("--choose-only", action="store_true", help="stop after the choice (no confirmation runs)")
    args = parser.parse_args(argv)
    spec = yaml.safe_load(args.spec.read_text())
    table = RunTable(args.reports / "synth_settings.csv")
    lock = threading.Lock()
    work = args.work.resolve()
    synth_device = args.synth_device or args.device

    def rows():
        return on_device(table.rows, synth_device)

    def run(phase: str, variant: dict, seed: int) -> None:
        key = f"{phase}-{variant['name']}"
        with lock:
            done = rows()
            if len(done) and ((done["key"] == key) & (done["seed"] == seed)).any():
                return
        overrides = {**spec["base"], **(spec[phase].get("set") or {}), **(variant.get("set") or {})}
        print(f"synth settings: {key} seed {seed}", flush=True)
        tags = {"phase": phase, "variant": variant["name"]}
        try:
            row = measure(key, overrides, seed, work, args.params, args.device, args.synth_device, **tags)
        except SystemExit as failed:  # a setting whose pool fails its checks is a result too
            row = {"key": key, "seed": seed, **tags, "synth_device": synth_device, "failed": str(failed)}
        with lock:
            table.add(row)

    def run_phase(phase: str, variants: list[dict], seeds: list[int] | None = None) -> None:
        seeds = spec[phase]["seeds"] if seeds is None else seeds
        if not variants or not seeds:
            return
        with ThreadPoolExecutor(max_workers=args.jobs) as pool:  # first run of a seed trains its teacher
            list(pool.map(lambda seed: run(phase, variants[0], seed), seeds))
        with ThreadPoolExecutor(max_workers=args.jobs) as pool:
            list(pool.map(lambda job: run(phase, *job), [(v, s) for s in seeds for v in variants[1:]]))

    names = [v["name"] for v in spec["variants"]]
    screen = spec["choose"].get("screen")
    if screen:
        run_phase("choose", spec["variants"], screen["seeds"])
        kept = screened(rows(), names, screen)
        print(f"synth settings: past the screen on seeds {screen['seeds']}: {', '.join(kept)}", flush=True)
        rest = [s for s in spec["choose"]["seeds"] if s not in screen["seeds"]]
        run_phase("choose", [v for v in spec["variants"] if v["name"] in kept], rest)
    else:
        kept = names
        run_phase("choose", spec["variants"])
    scores = {n: mean_of(rows(), n, "choose", "val_accuracy")[0] for n in kept}
    best = max((n for n in kept if scores[n] == scores[n]), key=scores.get)  # NaN: a seed failed
    print(f"synth settings: chosen on the validation split: {best}", flush=True)
    if not args.choose_only:
        run_phase("confirm", [v for v in spec["variants"] if v["name"] in (names[0], best)])
    write_text(args.reports / "synth_settings.md", render(rows(), spec, best, args.device, synth_device))
    print(f"synth settings: -> {args.reports / 'synth_settings.md'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
