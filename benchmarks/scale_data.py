"""Memory and time of the data stages on image folders of natural-image size, against PIL alone.

    python benchmarks/scale_data.py --idx /usr/share/datasets/fashion-mnist --counts 10000 50000 \
        [--size 224] [--work /tmp/kdflow-scale] [--out reports/scale_data.csv]

For each count, an image folder of that many RGB JPEGs (Fashion-MNIST images upscaled to --size and
tinted per class, one directory per class; made once, then reused) is prepared by the real stage
(`python -m kdcore prepare` in its own process, splits 50/20/20/10%), then `train_teacher`,
`build_transfer` and `distill` run on it with a small teacher (CNN 8-16, one epoch), 2 views per
transfer image and an MLP student (one epoch): the content does not matter here, the sizes do. Each
stage's peak resident memory (the process's ru_maxrss) and wall time are measured. The baseline,
measured in the same run: PIL alone decoding and resizing the same files in one process, as prepare
must. Prints one row per count and writes them to --out; with --stages, the stages left out keep the
figures --out already holds.
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd
import yaml

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from kdcore.data.readers import IdxReader  # noqa: E402

TINTS = np.array([[1.0, 0.6, 0.6], [0.6, 1.0, 0.6], [0.6, 0.6, 1.0], [1.0, 1.0, 0.5], [1.0, 0.5, 1.0],
                  [0.5, 1.0, 1.0], [0.9, 0.7, 0.4], [0.4, 0.7, 0.9], [0.8, 0.8, 0.8], [1.0, 0.8, 0.6]])  # fmt: skip


def make_folder(idx: Path, count: int, size: int, out: Path) -> Path:
    """`count` JPEGs of size x size RGB under out/<class>/ (kept when already complete)."""
    from PIL import Image

    done = out / ".complete"
    if done.is_file():
        return out
    reader = IdxReader(idx)
    labels = reader.header.labels.numpy()
    for name in reader.header.class_names:
        (out / name).mkdir(parents=True, exist_ok=True)
    for i in range(count):
        k = i % len(labels)
        gray = reader.read(np.array([k]))[0, ..., 0].numpy()  # (H, W, C) -> (H, W)
        tint = TINTS[labels[k] % len(TINTS)] * (0.85 + 0.15 * ((i // len(labels)) % 2))
        rgb = (gray[..., None].astype(np.float32) * tint).clip(0, 255).astype(np.uint8)
        image = Image.fromarray(rgb).resize((size, size), Image.BILINEAR)
        image.save(out / reader.header.class_names[labels[k]] / f"{i:07d}.jpg", quality=90)
    done.write_text(str(count))
    return out


def pil_alone(folder: Path, size: int) -> float:
    """Seconds PIL takes to decode (and resize to `size`) every file of the folder, in one process."""
    from PIL import Image

    files = sorted(f for f in folder.rglob("*.jpg"))
    started = time.perf_counter()
    for f in files:
        with Image.open(f) as img:
            np.asarray(img.convert("RGB").resize((size, size), Image.BILINEAR), dtype=np.uint8)
    return time.perf_counter() - started


PEAK = (
    "import resource, sys; from kdcore.__main__ import main; code = main(sys.argv[1:]); "
    "print('peak_kb', resource.getrusage(resource.RUSAGE_SELF).ru_maxrss, file=sys.stderr); sys.exit(code)"
)


def run_stage(stage: str, params: Path) -> tuple[float, float]:
    """(wall seconds, peak resident MB) of the stage run in its own process, as `python -m kdcore` runs it."""
    started = time.perf_counter()
    result = subprocess.run([sys.executable, "-c", PEAK, stage, "--params", str(params)], cwd=ROOT,
                            capture_output=True, text=True, env={**os.environ, "TQDM_DISABLE": "1"})  # fmt: skip
    seconds = time.perf_counter() - started
    if result.returncode != 0:
        raise SystemExit(f"{stage} failed: {result.stderr.strip().splitlines()[-1]}")
    peak_kb = next(int(line.split()[1]) for line in result.stderr.splitlines() if line.startswith("peak_kb"))
    return seconds, peak_kb / 1024


def params_for(folder: Path, count: int, size: int, root: Path) -> Path:
    raw = yaml.safe_load((ROOT / "params.yaml").read_text())
    raw["data"] = {"source": "imagefolder", "path": str(folder), "image_size": size, "channels": 3,
                   "splits": {"teacher_train": count // 2, "transfer": count // 5, "test": count // 5,
                              "validation": count - count // 2 - 2 * (count // 5)}}  # fmt: skip
    raw["paths"] = {k: str(root / v) for k, v in raw["paths"].items()}
    raw["teachers"] = {"cnn": {"model": {"name": "cnn", "channels": [8, 16], "hidden": 32, "batchnorm": True},
                               "train": {"epochs": 1, "batch_size": 64, "lr": 0.002, "shift": 2}}}  # fmt: skip
    raw["transfer"].update({"views": 2, "mix": "none"})
    raw["student"] = {"model": {"name": "mlp", "hidden": [32]}, "train": {"epochs": 1, "batch_size": 128, "lr": 0.003}}
    path = root / "params.yaml"
    root.mkdir(parents=True, exist_ok=True)
    path.write_text(yaml.safe_dump(raw, sort_keys=False))
    return path


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--idx", type=Path, required=True, help="a directory of IDX files (Fashion-MNIST)")
    parser.add_argument("--counts", type=int, nargs="+", default=[10_000, 50_000])
    parser.add_argument("--size", type=int, default=224)
    parser.add_argument("--work", type=Path, default=Path("/tmp/kdflow-scale"))
    parser.add_argument("--out", type=Path, default=ROOT / "reports" / "scale_data.csv")
    parser.add_argument("--stages", nargs="+", default=["check_params", "prepare", "train_teacher", "build_transfer",
                        "distill"], help="stages to run and measure, in order")  # fmt: skip
    args = parser.parse_args(argv)
    rows = []
    for count in args.counts:
        folder = make_folder(args.idx, count, args.size, args.work / f"folder-{count}")
        params = params_for(folder, count, args.size, args.work / f"run-{count}")
        shutil.rmtree(args.work / f"run-{count}" / ".kdflow", ignore_errors=True)  # no cached teacher outputs
        baseline = pil_alone(folder, args.size)
        on_disk = sum(f.stat().st_size for f in folder.rglob("*.jpg"))
        row = {"images": count, "size": args.size, "jpeg_mb": round(on_disk / 2**20, 1),
               "float32_gb": round(count * 3 * args.size**2 * 4 / 2**30, 2),
               "pil_alone_s": round(baseline, 1)}  # fmt: skip
        for stage in args.stages:
            seconds, peak_mb = run_stage(stage, params)
            row[f"{stage}_s"], row[f"{stage}_peak_mb"] = round(seconds, 1), round(peak_mb)
            print(f"{count} images: {stage} {seconds:.1f} s, peak {peak_mb:.0f} MB", flush=True)
        if "prepare_s" in row:
            row["prepare_vs_pil"] = round(row["prepare_s"] / baseline, 2)
        rows.append(row)
        print(rows[-1], flush=True)
    frame = pd.DataFrame(rows)
    if args.out.is_file():  # stages not measured this time keep their earlier figures
        earlier = pd.read_csv(args.out).set_index("images")
        frame = frame.set_index("images").combine_first(earlier).reset_index()[earlier.reset_index().columns]
    args.out.parent.mkdir(parents=True, exist_ok=True)
    frame.to_csv(args.out, index=False)
    print(frame.to_string(index=False))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
