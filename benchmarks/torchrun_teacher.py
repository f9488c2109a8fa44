"""The teacher trained by 1 process and by torchrun with N processes: wall time and test accuracy.

    python benchmarks/torchrun_teacher.py --idx /usr/share/datasets/fashion-mnist [--processes 1 2]
                                          [--epochs 4] [--work /tmp/kdflow-torchrun] [--csv reports/torchrun.csv]

One project under --work: Fashion-MNIST with its published test split (splits 30,000 / 20,000 / 10,000 /
10,000), prepared once; then `python -m kdcore train_teacher` (the DVC stage's command) with
`distributed.nproc_per_node` set to each --processes value, `cpu_threads: 1` per process, timed from
outside (torchrun's start included). Accuracy is the teacher's on the 10,000 published test images.
Each row goes to --csv at once (rows of the same processes and device are replaced).
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from kdcore.artifacts import atomic_path  # noqa: E402
from kdcore.config import read_yaml  # noqa: E402
from kdcore.experiments.sweep import set_dotted  # noqa: E402


def project(work: Path, idx: Path, epochs: int, processes: int, device: str) -> Path:
    raw = read_yaml((ROOT / "params.yaml").read_text(), source="params.yaml")
    overrides = {
        "device": device,
        "cpu_threads": 1,
        "data.source": "idx",
        "data.path": str(idx),
        "data.published_test": True,
        "data.splits": {"teacher_train": 30000, "transfer": 20000, "test": 10000, "validation": 10000},
        "teachers.cnn.train.epochs": epochs,
        "distributed.nproc_per_node": processes,
    }
    for key, value in overrides.items():
        set_dotted(raw, key, value)
    raw["paths"] = {name: str(work / value) for name, value in raw["paths"].items()}
    path = work / f"params-{processes}.yaml"
    path.write_text(yaml.safe_dump(raw, sort_keys=False))
    return path


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--idx", type=Path, required=True, help="directory of the Fashion-MNIST IDX files")
    parser.add_argument("--processes", type=int, nargs="+", default=[1, 2])
    parser.add_argument("--epochs", type=int, default=4)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--work", type=Path, default=Path("/tmp/kdflow-torchrun"))
    parser.add_argument("--csv", type=Path, default=ROOT / "reports" / "torchrun.csv")
    args = parser.parse_args(argv)
    work = args.work.resolve()
    work.mkdir(parents=True, exist_ok=True)
    import os

    path = os.pathsep.join(p for p in [str(ROOT), os.environ.get("PYTHONPATH")] if p)
    env = {**os.environ, "TQDM_DISABLE": "1", "PYTHONPATH": path}
    first = project(work, args.idx.resolve(), args.epochs, 1, args.device)
    if not (work / "data/prepared/meta.json").is_file():
        subprocess.run([sys.executable, "-m", "kdcore", "prepare", "--params", str(first)], cwd=ROOT, env=env,
                       check=True)  # fmt: skip
    header = "device,processes,epochs,train_samples,seconds,test_accuracy\n"
    for processes in args.processes:
        params = project(work, args.idx.resolve(), args.epochs, processes, args.device)
        started = time.perf_counter()
        subprocess.run([sys.executable, "-m", "kdcore", "train_teacher", "--params", str(params)], cwd=ROOT, env=env,
                       check=True)  # fmt: skip
        seconds = time.perf_counter() - started
        history = (work / "dvclive/teachers/cnn/plots/metrics/eval/accuracy.tsv").read_text().splitlines()
        accuracy = float(history[-1].split("\t")[-1])
        samples = json.loads((work / "models/teachers/cnn/model.json").read_text())["config"]["train_samples"]
        print(f"{processes} process(es): {seconds:.1f} s, test accuracy {accuracy:.4f}", flush=True)
        old = args.csv.read_text().splitlines(keepends=True)[1:] if args.csv.is_file() else []
        kept = [line for line in old if not line.startswith(f"{args.device},{processes},")]
        row = f"{args.device},{processes},{args.epochs},{samples},{seconds:.1f},{accuracy:.4f}\n"
        with atomic_path(args.csv) as tmp:
            tmp.write_text(header + "".join(kept) + row)
    return 0


if __name__ == "__main__":
    sys.exit(main())
