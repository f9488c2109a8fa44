"""Search for a configuration in which distillation helps: runs the real stages for each variant
and seed in a scratch workspace and prints test accuracy of teacher, scratch and distilled student.

    python benchmarks/kd_search.py benchmarks/kd_search.yaml --seeds 100 101 102 --out benchmarks/results/kd_search.csv

The YAML file lists variants, each a name and dotted overrides of params.yaml. Stages whose inputs
did not change between variants (the teacher, the transfer set, the scratch student) are reused.
"""

from __future__ import annotations

import argparse
import copy
import hashlib
import json
import sys
import time
from pathlib import Path

import pandas as pd
import yaml

from kdcore.checkpoint import load_model_dir
from kdcore.config import parse_params
from kdcore.data.prepared import load_split
from kdcore.inference import predict_logits
from kdcore.models import count_params
from kdcore.stages import get_stage

# which params each stage's output depends on (mirrors dvc.yaml)
STAGE_KEYS = {
    "prepare": ["seed", "data"],
    "train_teacher": ["seed", "data", "teacher"],
    "build_transfer": ["seed", "data", "teacher", "transfer"],
    "train_student_scratch": ["seed", "data", "transfer", "student"],
    "distill": ["seed", "data", "teacher", "transfer", "student", "distill"],
}


# the file each stage writes last; present means the stage's output for that key is complete
DONE_MARKER = {"prepare": "meta.json", "build_transfer": "summary.json"}


def set_dotted(raw: dict, key: str, value) -> None:
    node = raw
    *parents, leaf = key.split(".")
    for p in parents:
        node = node.setdefault(p, {})
    node[leaf] = value


def key_of(raw: dict, keys: list[str]) -> str:
    return hashlib.sha256(json.dumps({k: raw.get(k) for k in keys}, sort_keys=True).encode()).hexdigest()[:16]


def accuracy(model_dir: Path, prepared: Path) -> tuple[float, int]:
    test = load_split(prepared, "test")
    model, _ = load_model_dir(model_dir)
    return float((predict_logits(model, test.x).argmax(1) == test.y).float().mean()), count_params(model)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("grid", type=Path)
    parser.add_argument("--params", type=Path, default=Path("params.yaml"))
    parser.add_argument("--seeds", type=int, nargs="+", default=[100, 101, 102])
    parser.add_argument("--work", type=Path, default=Path(".kdflow/search"))
    parser.add_argument("--out", type=Path, default=Path("benchmarks/results/kd_search.csv"))
    args = parser.parse_args()

    base = yaml.safe_load(args.params.read_text())
    variants = yaml.safe_load(args.grid.read_text())["variants"]
    rows = []
    for variant in variants:
        for seed in args.seeds:
            raw = copy.deepcopy(base)
            for k, v in (variant.get("set") or {}).items():
                set_dotted(raw, k, v)
            raw["seed"] = seed
            raw["device"] = "cpu"
            dirs = {stage: args.work / stage / key_of(raw, keys) for stage, keys in STAGE_KEYS.items()}
            raw["paths"] = {
                "prepared": str(dirs["prepare"]),
                "teacher": str(dirs["train_teacher"]),
                "transfer": str(dirs["build_transfer"]),
                "student_scratch": str(dirs["train_student_scratch"]),
                "student_kd": str(dirs["distill"]),
                "metrics": str(args.work / "metrics"),
                "plots": str(args.work / "plots"),
                "reports": str(args.work / "reports"),
                "live": str(args.work / "live"),
                "work": str(args.work / "state"),
            }
            params = parse_params(raw, source=f"{args.grid}:{variant['name']}")
            seconds = {}
            for stage, out in dirs.items():
                if (out / DONE_MARKER.get(stage, "model.json")).is_file():
                    continue
                started = time.perf_counter()
                get_stage(stage)(params)
                seconds[stage] = round(time.perf_counter() - started, 1)
            teacher_acc, teacher_params = accuracy(dirs["train_teacher"], dirs["prepare"])
            scratch_acc, _ = accuracy(dirs["train_student_scratch"], dirs["prepare"])
            kd_acc, student_params = accuracy(dirs["distill"], dirs["prepare"])
            row = {
                "variant": variant["name"],
                "seed": seed,
                "teacher": teacher_acc,
                "scratch": scratch_acc,
                "kd": kd_acc,
                "gain_points": round((kd_acc - scratch_acc) * 100, 2),
                "teacher_params": teacher_params,
                "student_params": student_params,
                "distill_s": seconds.get("distill"),
                "teacher_s": seconds.get("train_teacher"),
            }
            rows.append(row)
            print(json.dumps(row), file=sys.stderr, flush=True)
        frame = pd.DataFrame(rows)
        frame.to_csv(args.out, index=False)
    frame = pd.DataFrame(rows)
    summary = frame.groupby("variant", sort=False).agg(
        teacher=("teacher", "mean"),
        scratch=("scratch", "mean"),
        kd=("kd", "mean"),
        gain=("gain_points", "mean"),
        gain_min=("gain_points", "min"),
        gain_max=("gain_points", "max"),
        student_params=("student_params", "first"),
        teacher_params=("teacher_params", "first"),
    )
    print(summary.round(4).to_string())
    return 0


if __name__ == "__main__":
    sys.exit(main())
