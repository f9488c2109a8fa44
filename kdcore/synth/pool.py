"""Runs a synthesizer block by block with a checkpoint per block, so a killed run resumes where it stopped.

Block i is made with a random generator seeded by (seed, i) alone, and with the synthesizer state
saved after block i - 1, so a resumed run writes the same bytes as an uninterrupted one.
"""

from __future__ import annotations

import shutil
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from tqdm import tqdm

from kdcore.artifacts import load_tensors, read_json, save_tensors, save_with, write_json
from kdcore.synth import Synthesizer

PREPARE_SEED_OFFSET = 7_919  # the prepare phase draws from its own stream


def block_generator(seed: int, index: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed * 1_000_003 + index)


@dataclass
class Pool:
    images: torch.Tensor  # (N, C, H, W) normalised
    targets: torch.Tensor  # (N,) target class of each image, -1 if the method sets none
    seconds: float  # synthesis time summed over every (resumed) run
    resumed_blocks: int  # blocks found on disk from an earlier run


class PrepareCheckpoint:
    """The state of a synthesizer's prepare phase (a generator in training), saved with torch.save
    (tensors and plain values only, loaded with weights_only=True)."""

    def __init__(self, directory: Path) -> None:
        self.directory = Path(directory)

    def load(self) -> dict[str, Any] | None:
        path = self.directory / "prepare.pt"
        if not path.is_file():
            return None
        try:
            return torch.load(path, weights_only=True)
        except Exception:  # a damaged checkpoint is set aside, never trusted
            print(
                f"synthesize: ignoring unreadable checkpoint {path}; starting the prepare phase over", file=sys.stderr
            )
            path.unlink(missing_ok=True)
            return None

    def save(self, state: dict[str, Any]) -> None:
        self.directory.mkdir(parents=True, exist_ok=True)
        save_with(self.directory / "prepare.pt", lambda tmp: torch.save(state, tmp))


def _load_block(path: Path) -> dict[str, torch.Tensor] | None:
    try:
        return load_tensors(path)
    except Exception:
        print(f"synthesize: ignoring unreadable block {path}; making it again", file=sys.stderr)
        path.unlink(missing_ok=True)
        return None


def synthesize_pool(
    synthesizer: Synthesizer,
    num_blocks: int,
    seed: int,
    work_dir: Path,
    fingerprint: str,
    prepare_steps: int = 0,
    block_steps: int = 0,
    desc: str = "synthesize",
) -> Pool:
    """Makes (or finds on disk) `num_blocks` blocks. The progress bar counts optimisation steps:
    `prepare_steps` before the blocks, `block_steps` in each.

    `work_dir / fingerprint[:16]` holds the blocks until the caller clears it; a directory written
    for another fingerprint (other settings or teacher) is never read."""
    directory = Path(work_dir) / fingerprint[:16]
    marker = directory / "fingerprint.json"
    if marker.is_file() and read_json(marker).get("fingerprint") != fingerprint:
        shutil.rmtree(directory)
    directory.mkdir(parents=True, exist_ok=True)
    write_json(marker, {"fingerprint": fingerprint})

    bar = tqdm(
        total=prepare_steps + num_blocks * block_steps,
        desc=desc,
        unit="step",
        file=sys.stderr,
        mininterval=1.0,
        dynamic_ncols=True,
    )
    seconds = 0.0
    try:
        started = time.perf_counter()
        synthesizer.prepare(block_generator(seed, PREPARE_SEED_OFFSET), bar.update, PrepareCheckpoint(directory))
        prepare_marker = directory / "prepare_seconds.json"
        if not prepare_marker.is_file():
            write_json(prepare_marker, {"seconds": time.perf_counter() - started})
        seconds += read_json(prepare_marker)["seconds"]

        images: list[torch.Tensor] = []
        targets: list[torch.Tensor] = []
        resumed = 0
        for index in range(num_blocks):
            path = directory / f"block_{index:05d}.safetensors"
            saved = _load_block(path) if path.is_file() else None
            if saved is not None:
                images.append(saved["x"])
                targets.append(saved["target"])
                seconds += float(saved["seconds"])
                synthesizer.load_state({k: v for k, v in saved.items() if k not in ("x", "target", "seconds")})
                resumed += 1
                bar.update(block_steps)
                continue
            started = time.perf_counter()
            generator = block_generator(seed, index)
            x, target = synthesizer.block(index, generator, bar.update)
            images.append(x)
            targets.append(target)
            synthesizer.after_block(torch.cat(images), generator)
            took = time.perf_counter() - started
            seconds += took
            save_tensors(
                path,
                {"x": x, "target": target, "seconds": torch.tensor(took, dtype=torch.float64), **synthesizer.state()},
            )
    finally:
        bar.close()
    if resumed:
        print(f"{desc}: resumed with {resumed} of {num_blocks} blocks from {directory}", file=sys.stderr)
    return Pool(torch.cat(images), torch.cat(targets), seconds, resumed)


def clear_pool(work_dir: Path, fingerprint: str) -> None:
    shutil.rmtree(Path(work_dir) / fingerprint[:16], ignore_errors=True)
