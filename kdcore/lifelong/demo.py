"""Land demo batches of the bundled data for lifelong updates: `python -m kdcore.lifelong.demo`.

    python -m kdcore.lifelong.demo [--params params.yaml] [--batches 3] [--step 15] [--corrupt]

Cuts the prepared teacher split (digits the student never saw; run `dvc repro prepare` first) into
seeded disjoint batches, rotates batch i by (i + 1) x step degrees (drifted inputs: the domain
scenario) and writes each to paths.landing as `rot<angle>.npz` (x uint8 (N, H, W), y the class
names as integers). `--corrupt` also lands `corrupt.npz`, a batch with NaN pixels, which the
update flow must reject.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np
import torch

from kdcore.artifacts import atomic_path
from kdcore.config import load_params
from kdcore.data.prepared import load_meta, load_split
from kdcore.errors import KdflowError
from kdcore.lifelong.scenarios import rotate


def save_npz(path: Path, x: np.ndarray, y: np.ndarray) -> None:
    with atomic_path(path) as tmp, open(tmp, "wb") as fh:
        np.savez_compressed(fh, x=x, y=y)


def land(prepared_dir: Path, landing: Path, seed: int, batches: int, step: float, corrupt: bool) -> list[Path]:
    """Writes `batches` rotated batches of the teacher split (each `step` degrees more than the one
    before, raw pixels in [0, 1] as a user's data would come) into `landing`; `corrupt` adds a batch
    of NaN pixels the checks must reject."""
    meta = load_meta(prepared_dir)
    split = load_split(prepared_dir, "teacher_train")
    mean = torch.tensor(meta.meta["mean"]).view(1, -1, 1, 1)
    std = torch.tensor(meta.meta["std"]).view(1, -1, 1, 1)
    order = torch.randperm(len(split.y), generator=torch.Generator().manual_seed(seed + 7))
    names = meta.meta["class_names"]
    landing = Path(landing)
    landing.mkdir(parents=True, exist_ok=True)
    written = []
    for i, part in enumerate(order.tensor_split(batches)):
        part = part.sort().values
        angle = (i + 1) * step
        images = rotate(split.x[part], angle, meta.fill) * std + mean  # back to [0, 1]
        x = (images.clamp(0, 1) * 255).round().to(torch.uint8).squeeze(1).numpy()
        y = np.array([int(names[c]) if names[c].lstrip("-").isdigit() else c for c in split.y[part].tolist()])
        path = landing / f"rot{int(angle):03d}.npz"
        save_npz(path, x, y)
        written.append(path)
    if corrupt:  # the right shape, but pixels that are not numbers
        path = landing / "corrupt.npz"
        c, h, w = meta.input_shape
        x = np.full((20, h, w), 0.5, dtype=np.float32)
        x[::3, 0, 0] = np.nan
        save_npz(path, x, np.array([int(names[i % len(names)]) for i in range(20)]))
        written.append(path)
    return written


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m kdcore.lifelong.demo", description=__doc__.splitlines()[0])
    parser.add_argument("--params", type=Path, default=Path("params.yaml"))
    parser.add_argument("--batches", type=int, default=3)
    parser.add_argument("--step", type=float, default=15.0, help="degrees of rotation added per batch")
    parser.add_argument("--corrupt", action="store_true", help="also land a batch the checks must reject")
    args = parser.parse_args(argv)
    try:
        params = load_params(args.params)
        landed = land(params.paths.prepared, params.paths.landing, params.seed, args.batches, args.step, args.corrupt)
        for path in landed:
            print(f"landed {path}")
    except KdflowError as err:
        print(f"kdflow demo: error: {err}", file=sys.stderr)
        return err.exit_code
    return 0


if __name__ == "__main__":
    sys.exit(main())
