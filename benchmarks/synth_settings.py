"""Data-free settings chosen on a validation split and confirmed on other seeds: DeepInversion's and
how the student learns from the pool (views, temperature).

    python benchmarks/synth_settings.py [--spec benchmarks/synth_settings.yaml] [--synth-device cuda] [--jobs N]

Writes reports/synth_settings.csv (every run) and reports/synth_settings.md. Runs go through the real
stages (`python -m kdcore.experiments.sweep`); finished runs are kept and not measured again. With `--jobs N` the
runs of a phase go N at a time once each seed's teacher exists (its first run trains it), so the
synthesis times of parallel runs are not comparable with benchmarks/datafree.py's.

A phase may set its own budget (`set: {synth.images: N}`): DeepInversion optimises its images in
independent blocks of `batch_size`, so the settings act on each block alike and a smaller pool
compares them at a fraction of the cost. A run counts for a phase only if its synthesis ran on this
run's synthesis device with the phase's image budget; other rows stay in the CSV and take no part.
"""

from __future__ import annotations

import argparse
import re
import statistics
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


def mean_of(rows, variant: str, phase: str, column: str) -> tuple[float, list[float]]:
    """Mean and per-seed values in points; the mean is NaN (never chosen) if a seed failed."""
    chosen = rows[(rows["variant"] == variant) & (rows["phase"] == phase)].sort_values("seed")
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


def images_of(spec: dict, phase: str, variant: str | None = None) -> int:
    """The phase's image budget, times the variant's `images_x` (a variant may trade steps for images)."""
    factor = next((v.get("images_x", 1) for v in spec["variants"] if v["name"] == variant), 1)
    return int(int({**spec["base"], **(spec[phase].get("set") or {})}["synth.images"]) * factor)


def current(rows, spec: dict, synth_device: str):
    """The rows that count: synthesis on `synth_device` with their phase's (and variant's) image budget."""
    if not len(rows) or "synth_device" not in rows:
        return rows
    budget = [
        images_of(spec, phase, variant) if phase in ("choose", "confirm") else -1
        for phase, variant in zip(rows["phase"], rows["variant"], strict=True)
    ]
    return rows[(rows["synth_device"] == synth_device) & (rows["synth_images"] == budget)]


def confirmed(spec: dict, best: str) -> list[str]:
    """The variants of the confirmation: the shipped point, the chosen one and the spec's `confirm.also`."""
    return list(dict.fromkeys([spec["variants"][0]["name"], best, *(spec["confirm"].get("also") or [])]))


def render(rows, spec: dict, best: str, device: str, synth_device: str) -> str:
    labels = {v["name"]: v["label"] for v in spec["variants"]}
    choose, confirm = spec["choose"]["seeds"], spec["confirm"]["seeds"]
    steps = spec["base"]["synth.steps"]
    images = {phase: images_of(spec, phase) for phase in ("choose", "confirm")}
    splits = spec["choose"]["set"]["data.splits"]
    lines = [
        "# Data-free settings: chosen on a validation split",
        "",
        "Made by `python benchmarks/synth_settings.py --jobs 2` (`benchmarks/synth_settings.yaml`); every run in "
        f"[synth_settings.csv](synth_settings.csv); synthesis on `{synth_device}`, the other stages on `{device}`. "
        "Default teacher, MLP student unless a row says otherwise, "
        f"DeepInversion {steps} steps per image, KD only (T=4 unless a row says otherwise): the student sees "
        "no real image; real digits only score it.",
        "",
        f"## 1. Choice on the validation split (seeds {', '.join(map(str, choose))}; {images['choose']:,} "
        f"synthetic images; teacher split {splits['teacher_train']:,}, validation {splits['validation']:,})",
        "",
        "| setting | validation accuracy (mean) | per seed | test accuracy (not used to choose) |",
        "|---|---:|---|---:|",
    ]
    for name in labels:
        val, per_seed = mean_of(rows, name, "choose", "val_accuracy")
        test, _ = mean_of(rows, name, "choose", "accuracy")
        mark = " (chosen)" if name == best else ""
        if failed := failures(rows, name, "choose"):
            lines.append(f"| {labels[name]} | failed | {failed} | |")
            continue
        lines.append(f"| {labels[name]}{mark} | {val:.2f}% | {', '.join(f'{v:.1f}' for v in per_seed)} | {test:.2f}% |")
    scored = rows[(rows["phase"] == "choose") & rows["val_accuracy"].notna()] if len(rows) else rows
    if len(scored):
        p, n = scored["val_accuracy"].mean(), splits["validation"]
        se = (p * (1 - p) / n) ** 0.5 * 100
        lines += ["", f"Sampling error of the validation split alone ({n} digits, accuracy near {p:.0%}): "
                      f"{se:.1f} points for one seed, {se / len(choose) ** 0.5:.1f} for a mean of {len(choose)} "
                      "seeds; differences below that are not evidence."]  # fmt: skip
    if spec.get("excluded"):
        lines += ["", "Left out of the search:"]
        lines += [f"- {v['label']}: {v['reason']}." for v in spec["excluded"]]
    lines += [
        "",
        f"## 2. Confirmation on seeds {', '.join(map(str, confirm))} ({images['confirm']:,} synthetic images, "
        "the shipped budget; shipped splits, test accuracy)",
        "",
        "| setting | test accuracy (mean ± sd) | per seed | gain over scratch (points) |",
        "|---|---:|---|---:|",
    ]
    for name in confirmed(spec, best):
        test, per_seed = mean_of(rows, name, "confirm", "accuracy")
        gain, _ = mean_gain(rows, name, "confirm", "accuracy", "scratch_accuracy")
        if not per_seed:
            lines.append(f"| {labels[name]} | not run yet | | |")
            continue
        spread = f" ± {statistics.stdev(per_seed):.2f}" if len(per_seed) > 1 else ""
        lines.append(
            f"| {labels[name]} | {test:.2f}%{spread} | {', '.join(f'{v:.1f}' for v in per_seed)} | {gain:+.2f} |"
        )
    if spec.get("notes"):
        lines += ["", "## Notes", "", *[f"- {note.strip()}" for note in spec["notes"]]]
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
        return current(table.rows, spec, synth_device)

    def run(phase: str, variant: dict, seed: int) -> None:
        key = f"{phase}-{variant['name']}"
        with lock:
            done = rows()
            if len(done) and ((done["key"] == key) & (done["seed"] == seed)).any():
                return
        overrides = {**spec["base"], **(spec[phase].get("set") or {}), **(variant.get("set") or {})}
        overrides["synth.images"] = images_of(spec, phase, variant["name"])
        print(f"synth settings: {key} seed {seed}", flush=True)
        tags = {"phase": phase, "variant": variant["name"]}
        try:
            row = measure(key, overrides, seed, work, args.params, args.device, args.synth_device, **tags)
        except SystemExit as failed:  # a setting whose pool fails its checks is a result too
            row = {"key": key, "seed": seed, **tags, "synth_device": synth_device,
                   "synth_images": overrides["synth.images"], "failed": str(failed)}  # fmt: skip
        with lock:
            table.add(row)

    def run_phase(phase: str, variants: list[dict]) -> None:
        seeds = spec[phase]["seeds"]
        with ThreadPoolExecutor(max_workers=args.jobs) as pool:  # first run of a seed trains its teacher
            list(pool.map(lambda seed: run(phase, variants[0], seed), seeds))
        with ThreadPoolExecutor(max_workers=args.jobs) as pool:
            list(pool.map(lambda job: run(phase, *job), [(v, s) for s in seeds for v in variants[1:]]))

    run_phase("choose", spec["variants"])
    names = [v["name"] for v in spec["variants"]]
    scores = {n: mean_of(rows(), n, "choose", "val_accuracy")[0] for n in names}
    best = max((n for n in names if scores[n] == scores[n]), key=scores.get)  # NaN: a seed failed
    print(f"synth settings: chosen on the validation split: {best}", flush=True)
    if not args.choose_only:
        run_phase("confirm", [v for v in spec["variants"] if v["name"] in confirmed(spec, best)])
    write_text(args.reports / "synth_settings.md", render(rows(), spec, best, args.device, synth_device))
    print(f"synth settings: -> {args.reports / 'synth_settings.md'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
