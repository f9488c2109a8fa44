"""The student search on the bundled digits: its Pareto front, the front's students retrained on seeds the
search did not use and scored on the test split, against the hand-picked defaults; and the same search
under a second teacher.

    python benchmarks/search.py [--trials 40] [--seeds 1 2 3] [--work /tmp/kdflow-search]
                                [--teachers default narrow] [--retrain default] [--reports reports]

For each teacher (`default`: params.yaml's CNN; `narrow`: a CNN 8-16 with a 32-unit hidden layer, the size
of the default CNN student), in a project under --work with params.yaml's settings: prepare (shared),
train_teacher, synthesize, build_transfer, then search_student with `search.trials` and the shipped budget
and space of params.yaml, timed. Then every student on that search's front, and the two hand-picked
defaults (MLP 784-32-10 and CNN 8-16 hidden 32), is distilled by the distill stage with student.train's
full schedule on each of --seeds (the search ran on params.seed), exported to int8 ONNX as the export
stage does, and measured where it ships: test accuracy in onnxruntime and file size; then, with nothing else
running, each architecture's latency at batch 1 and 256 on one thread (as the search measures it: it does not
depend on the weights). `--jobs 2` distils two students at once. Rows go to reports/search.csv at once (a
rerun measures only what is missing); `--report-only` turns them into reports/search.md.
"""

from __future__ import annotations

import argparse
import json
import multiprocessing
import shutil
import sys
import time
from pathlib import Path

import pandas as pd
import yaml

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from kdcore.artifacts import atomic_path  # noqa: E402
from kdcore.config import parse_params, read_yaml  # noqa: E402
from kdcore.experiments.sweep import set_dotted  # noqa: E402

DEFAULTS = {"MLP 784-32-10": {"name": "mlp", "hidden": [32]},
            "CNN 8-16 h32": {"name": "cnn", "channels": [8, 16], "hidden": 32}}  # fmt: skip
TEACHERS = {
    "default": {},
    "narrow": {"teachers": {"cnn": {"model": {"name": "cnn", "channels": [8, 16], "hidden": 32, "batchnorm": True},
                                    "train": {"epochs": 20, "batch_size": 64, "lr": 0.002, "optimizer": "adam",
                                              "schedule": "cosine", "shift": 2}}}},
}  # fmt: skip
COLUMNS = ["teacher", "student", "spec", "role", "seed", "search_val_accuracy", "test_accuracy",
           "test_accuracy_int8", "params", "size_bytes_int8", "latency_ms_int8", "latency_ms_b256_int8"]  # fmt: skip


def project(work: Path, teacher: str, trials: int, **overrides: object) -> dict:
    """params.yaml's settings rooted under work/<teacher> (prepared data shared), with `overrides`."""
    raw = read_yaml((ROOT / "params.yaml").read_text(), source="params.yaml")
    raw.update(TEACHERS[teacher])
    raw["search"]["trials"] = trials
    raw["paths"] = {name: str(work / teacher / value) for name, value in raw["paths"].items()}
    raw["paths"]["prepared"] = str(work / "prepared")
    raw["paths"]["work"] = str(work / teacher / ".kdflow")
    for key, value in overrides.items():
        set_dotted(raw, key, value)
    return raw


def run(stage: str, raw: dict) -> None:
    from kdcore.stages import get_stage

    get_stage(stage)(parse_params(raw))


def search(work: Path, teacher: str, trials: int, log) -> tuple[pd.DataFrame, float]:
    raw = project(work, teacher, trials)
    root = work / teacher
    if not (Path(raw["paths"]["prepared"]) / "meta.json").is_file():
        run("prepare", raw)
    for stage in ("check_params", "train_teacher", "synthesize", "build_transfer"):
        if stage == "check_params" or not (root / "data/transfer/views.safetensors").is_file():
            run(stage, raw)
    done = root / "search_seconds.json"
    if not done.is_file():
        started = time.perf_counter()
        run("search_student", raw)
        done.write_text(json.dumps({"seconds": round(time.perf_counter() - started, 1)}))
        log(f"{teacher}: search of {trials} trials in {json.loads(done.read_text())['seconds']} s")
    return pd.read_csv(root / "models/search/trials.csv"), json.loads(done.read_text())["seconds"]


def shipped(work: Path, teacher: str, trials: int, spec: dict, seed: int) -> dict:
    """The student `spec` distilled on `seed`, exported to int8 ONNX as the export stage does, scored on the
    test split (in torch and in onnxruntime), its file measured. Latency is measured apart (`latencies`)."""
    import torch

    from kdcore.checkpoint import load_model_dir
    from kdcore.data.prepared import load_meta, load_split
    from kdcore.inference import predict_logits
    from kdcore.models import count_params
    from kdcore.models.onnx import OnnxModel
    from kdcore.quantize.onnx_export import export_onnx, quantize_int8
    from kdcore.transfer.pool import POOL_FILE, SYNTHETIC_FILE, calibration_images, load_pool

    raw = project(work, teacher, trials, seed=seed, **{"student.model": spec})
    out = work / teacher / "students" / f"{json.dumps(spec, sort_keys=True)}-s{seed}".replace("/", "_")
    raw["paths"]["student_kd"] = str(out / "model")
    raw["paths"]["live"] = str(out / "live")
    raw["paths"]["metrics"] = str(out / "metrics")
    params = parse_params(raw)
    if not (out / "model" / "model.json").is_file():
        run("distill", raw)
    model, _ = load_model_dir(out / "model")
    paths = params.paths
    meta = load_meta(paths.prepared)
    test = load_split(paths.prepared, "test")
    pool = load_pool(paths.transfer / POOL_FILE, paths.prepared, paths.synthetic / SYNTHETIC_FILE)
    calibration = calibration_images(pool, params.export.calibration_samples, "export.calibration_samples")
    torch_acc = float((predict_logits(model, test.x).argmax(1) == test.y).float().mean())
    export_onnx(model, meta.input_shape, out / "model.onnx")
    quantize_int8(out / "model.onnx", out / "model_int8.onnx", calibration, params.export.per_channel,
                  params.export.reduce_range)  # fmt: skip
    torch.set_num_threads(params.evaluate.latency_threads)
    int8_acc = float((predict_logits(OnnxModel(out / "model_int8.onnx"), test.x).argmax(1) == test.y).float().mean())
    return {
        "test_accuracy": round(torch_acc, 4),
        "test_accuracy_int8": round(int8_acc, 4),
        "params": int(count_params(model)),
        "size_bytes_int8": int((out / "model_int8.onnx").stat().st_size),
    }


def latencies(work: Path, teacher: str, trials: int, spec: dict) -> dict:
    """The int8 file's latency at batch 1 and 256 for the architecture `spec` (it does not depend on the
    weights), measured as the search measures it; run with nothing else on the machine."""
    import torch
    from pydantic import TypeAdapter

    from kdcore.config.models import ModelSpec
    from kdcore.data.prepared import load_meta
    from kdcore.models import build_model
    from kdcore.search.cost import measure
    from kdcore.transfer.pool import POOL_FILE, SYNTHETIC_FILE, calibration_images, load_pool

    params = parse_params(project(work, teacher, trials))
    paths = params.paths
    meta = load_meta(paths.prepared)
    pool = load_pool(paths.transfer / POOL_FILE, paths.prepared, paths.synthetic / SYNTHETIC_FILE)
    calibration = calibration_images(pool, params.export.calibration_samples, "export.calibration_samples")
    torch.manual_seed(0)
    model = build_model(TypeAdapter(ModelSpec).validate_python(spec), meta.input_shape, meta.num_classes)
    cost = measure(model, meta.input_shape, calibration, int8=True, repeats=params.evaluate.latency_repeats,
                   threads=params.evaluate.latency_threads)  # fmt: skip
    return {"latency_ms_int8": round(cost["latency_ms"], 4), "latency_ms_b256_int8": round(cost["latency_ms_b256"], 4)}


def _shipped_task(task: tuple) -> tuple:
    work, teacher, trials, spec, seed = task
    return task, shipped(work, teacher, trials, spec, seed)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--trials", type=int, default=40)
    parser.add_argument("--seeds", type=int, nargs="+", default=[1, 2, 3])
    parser.add_argument("--teachers", nargs="+", default=list(TEACHERS), choices=list(TEACHERS))
    parser.add_argument("--work", type=Path, default=Path("/tmp/kdflow-search"))
    parser.add_argument("--reports", type=Path, default=ROOT / "reports")
    parser.add_argument("--report-only", action="store_true", help="only remake reports/search.md from the CSV")
    parser.add_argument(
        "--roles",
        nargs="+",
        choices=["default", "chosen", "front"],
        default=["default", "chosen", "front"],
        help="which students are retrained",
    )
    parser.add_argument("--jobs", type=int, default=1, help="students distilled at once (latency is timed alone)")
    parser.add_argument("--retrain", nargs="*", choices=list(TEACHERS), default=None,
                        help="teachers whose fronts are retrained on --seeds (default: every teacher searched); "
                        "the others' fronts are reported on the validation split")  # fmt: skip
    args = parser.parse_args(argv)
    csv = args.reports / "search.csv"
    if not args.report_only:
        args.work.mkdir(parents=True, exist_ok=True)
        rows = pd.read_csv(csv).to_dict("records") if csv.is_file() else []
        have = {(r["teacher"], r["spec"], r["seed"]) for r in rows}
        for teacher in args.teachers:
            trials, seconds = search(args.work, teacher, args.trials, print)
            shutil.copyfile(
                args.work / teacher / "models/search/trials.csv", args.reports / f"search_trials_{teacher}.csv"
            )
            metrics = json.loads((args.work / teacher / "metrics/search.json").read_text())["search"]
            timings = json.loads((args.work / teacher / "metrics/timings/search.json").read_text())["search"]
            meta_path = args.reports / "search_meta.json"  # written at once: a cut run still reports its searches
            meta = json.loads(meta_path.read_text()) if meta_path.is_file() else {}
            meta[teacher] = {"search_seconds": seconds, **metrics, **timings}
            with atomic_path(meta_path) as tmp:
                tmp.write_text(json.dumps(meta, indent=1, sort_keys=True) + "\n")
            if args.retrain is not None and teacher not in args.retrain:
                continue  # its front stays on the validation split (search_trials_<teacher>.csv)
            front = trials[trials["on_front"]]
            students = [(name, spec, "default", None) for name, spec in DEFAULTS.items()]  # the yardsticks first
            students += [(r.student, json.loads(r.spec), "chosen" if r.chosen else "front", r.val_accuracy)
                         for r in front.sort_values("chosen", ascending=False).itertuples()]  # fmt: skip
            students = [s for s in students if s[2] in args.roles]
            about = {json.dumps(spec, sort_keys=True): (name, role, val) for name, spec, role, val in students}
            tasks = [(args.work, teacher, args.trials, spec, seed) for _, spec, _, _ in students for seed in args.seeds
                     if (teacher, json.dumps(spec, sort_keys=True), seed) not in have]  # fmt: skip
            with multiprocessing.get_context("spawn").Pool(args.jobs) as pool:
                for (_, _, _, spec, seed), measured in pool.imap(_shipped_task, tasks):
                    key = json.dumps(spec, sort_keys=True)
                    name, role, val = about[key]
                    row = {"teacher": teacher, "student": name, "spec": key, "role": role, "seed": seed,
                           "search_val_accuracy": val, **measured}  # fmt: skip
                    rows.append(row)
                    have.add((teacher, key, seed))
                    print(f"{teacher}: {name} seed {seed}: int8 test accuracy {row['test_accuracy_int8']:.4f}, "
                          f"{row['size_bytes_int8']:,} bytes", flush=True)  # fmt: skip
                    with atomic_path(csv) as tmp:
                        pd.DataFrame(rows, columns=COLUMNS).to_csv(tmp, index=False)
            for key in sorted({r["spec"] for r in rows if r["teacher"] == teacher}):
                timed = latencies(args.work, teacher, args.trials, json.loads(key))  # alone: the pool has closed
                for r in rows:
                    if r["teacher"] == teacher and r["spec"] == key:
                        r.update(timed)
                with atomic_path(csv) as tmp:
                    pd.DataFrame(rows, columns=COLUMNS).to_csv(tmp, index=False)
    from benchmarks.search_report import write_report

    write_report(args.reports, yaml.safe_load((ROOT / "params.yaml").read_text())["search"], args.trials, DEFAULTS)
    return 0


if __name__ == "__main__":
    sys.exit(main())
