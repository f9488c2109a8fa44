"""synthesize: data-free transfer images made from a teacher and the data's metadata alone.

Reads the teacher (`synth.teacher`, default the first) and `meta.json` of the prepared data (input
shape, classes, normalisation); no real split is ever opened (dvc.yaml lists exactly these deps).
Writes `images.safetensors` (the pool: `x` normalised images, `target` the class each was made
for, -1 if none, `predicted` the teacher's class) and `summary.json`, checks the pool with Great
Expectations, draws a grid of samples per class, and writes the pool's figures to
metrics/synthesis.json and the synthesis time, a measurement, to metrics/timings/synthesis.json. With
`transfer.source: real` nothing is synthesised: the pool is empty and the checks are skipped.
"""

from __future__ import annotations

import torch

from kdcore.artifacts import save_tensors, sha256_file, write_json, write_text
from kdcore.checkpoint import fingerprint, load_model_dir, weights_file
from kdcore.config import Params
from kdcore.data.prepared import load_meta
from kdcore.data.validate import validate_or_fail
from kdcore.evaluate.plots import save_sample_grid
from kdcore.inference import predict_logits
from kdcore.models import build_model
from kdcore.runtime import resolve_device, seed_everything
from kdcore.synth import SYNTHESIZERS, PixelBounds, SynthContext
from kdcore.synth.checks import synthetic_checks, synthetic_tables
from kdcore.synth.pool import clear_pool, synthesize_pool

SKIPPED_PAGE = (
    "<!doctype html><html><head><meta charset='utf-8'><title>kdflow synthesize data checks</title></head>"
    "<body><h1>kdflow synthesize data checks</h1><p>Not run: transfer.source is real, "
    "so no synthetic data was made.</p></body></html>\n"
)


def block_steps(method: str, steps: int) -> tuple[int, int]:
    """(steps before the blocks, steps per block) of a method, for the progress bar."""
    if method == "generator":
        return steps, 0
    if method == "inversion":
        return 0, steps
    return 0, 0


def run(params: Params) -> None:
    cfg = params.synth
    paths = params.paths
    out = paths.synthetic
    prepared = load_meta(paths.prepared)
    report = paths.reports / "validation" / "synthesize.html"
    grid = paths.plots / "synthetic_samples.png"
    metrics_path = paths.metrics / "synthesis.json"
    timing_path = paths.metrics / "timings" / "synthesis.json"  # measured: moves between identical runs
    if params.transfer.source == "real":
        c, h, w = prepared.input_shape
        save_tensors(
            out / "images.safetensors",
            {"x": torch.zeros(0, c, h, w), **{k: torch.zeros(0, dtype=torch.long) for k in ("target", "predicted")}},
        )
        write_json(out / "summary.json", {"method": None, "images": 0, "reason": "transfer.source is real"})
        write_json(metrics_path, {"images": 0})
        write_json(timing_path, {"seconds": 0.0})
        write_text(report, SKIPPED_PAGE)
        save_sample_grid(
            grid,
            torch.zeros(0, c, h, w),
            torch.zeros(0, dtype=torch.long),
            prepared.meta["class_names"],
            prepared.meta.get("mean", [0.0] * c),  # graph data has no pixel statistics
            prepared.meta.get("std", [1.0] * c),
            "no synthetic data (transfer.source: real)",
        )
        print("synthesize: transfer.source is real; nothing to synthesise")
        return

    device = resolve_device(params.device)
    name = params.synth_teacher()
    teacher_dir = paths.teachers / name
    teacher, _ = load_model_dir(teacher_dir, device)
    for p in teacher.parameters():
        p.requires_grad_(False)  # gradients flow to the pixels (or the generator) only
    bounds = PixelBounds.from_meta(prepared.meta)

    def make_proxy_student() -> torch.nn.Module:
        torch.manual_seed(params.seed)
        return build_model(params.student.model, prepared.input_shape, prepared.num_classes)

    ctx = SynthContext(teacher, prepared.input_shape, prepared.num_classes, bounds, device, make_proxy_student)
    seed_everything(params.seed)
    synthesizer = SYNTHESIZERS.get(cfg.method)(ctx, cfg)
    settings = cfg.model_dump(mode="json", exclude={"checks"})
    key = fingerprint(
        "synthesize",
        params.seed,
        settings,
        sha256_file(weights_file(teacher_dir)),
        prepared.meta["input_shape"],
        prepared.meta["mean"],
        prepared.meta["std"],
        params.student.model if cfg.disagreement_weight else None,
    )
    work = paths.work / "synth"
    before, per_block = block_steps(cfg.method, cfg.steps)
    pool = synthesize_pool(
        synthesizer, cfg.images // cfg.batch_size, params.seed, work, key, before, per_block, f"synthesize {cfg.method}"
    )

    logits = predict_logits(teacher, pool.images, device)
    predicted = logits.argmax(1)
    tables = synthetic_tables(pool.images, logits, bounds, prepared.num_classes)
    shares = tables["classes"]["share"].round(6).tolist()
    summary = {
        "method": cfg.method,
        "teacher": name,
        "teacher_sha256": sha256_file(weights_file(teacher_dir)),
        "images": len(pool.images),
        "settings": settings,
        "class_shares": shares,
        "mean_confidence": round(float(tables["predictions"]["confidence"].mean()), 6),
        "diversity": round(float(tables["diversity"]["distance"].mean()), 6),
        "target_agreement": (
            round(float((predicted == pool.targets).float().mean()), 6) if bool((pool.targets >= 0).any()) else None
        ),
    }
    # the pool is written before the checks: a failing check leaves it for inspection, the stage still fails
    save_tensors(out / "images.safetensors", {"x": pool.images, "target": pool.targets, "predicted": predicted})
    write_json(out / "summary.json", summary)
    save_sample_grid(
        grid,
        pool.images,
        predicted,
        prepared.meta["class_names"],
        prepared.meta["mean"],
        prepared.meta["std"],
        f"{cfg.method}: {len(pool.images)} images from teacher {name}, rows = the teacher's class",
    )
    write_json(
        metrics_path,
        {"images": len(pool.images), "mean_confidence": summary["mean_confidence"], "diversity": summary["diversity"]},
    )
    write_json(timing_path, {"seconds": round(pool.seconds, 1), "resumed_blocks": pool.resumed_blocks})
    checks = cfg.checks
    suites = synthetic_checks(checks.min_class_share, checks.min_mean_confidence, checks.min_diversity)
    validate_or_fail({t: (tables[t], suites[t]) for t in suites}, suite="synthesize", report_path=report)
    clear_pool(work, key)
    print(
        f"synthesize: {cfg.method}, {len(pool.images)} images from teacher {name} in {pool.seconds:.0f} s"
        f"{f' ({pool.resumed_blocks} blocks resumed)' if pool.resumed_blocks else ''}; "
        f"mean confidence {summary['mean_confidence']:.3f}, smallest class share {min(shares):.3f}, "
        f"diversity {summary['diversity']:.3f} -> {out}"
    )
