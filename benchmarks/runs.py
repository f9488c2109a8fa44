"""What the benchmark scripts share: runs through the real stages, as DVC experiments
(`measure_queued`) or one at a time in their own process (`measure`, kdcore.experiments.sweep), and a CSV of
finished runs that makes a rerun measure only what is missing."""

from __future__ import annotations

import json
import re
import subprocess
import sys
import tempfile
from pathlib import Path

import pandas as pd

from kdcore.artifacts import atomic_path

ROOT = Path(__file__).resolve().parents[1]


def measure(
    key: str,
    overrides: dict,
    seed: int,
    work: Path,
    params: Path,
    device: str = "cpu",
    synth_device: str | None = None,
    **extra: object,
) -> dict:
    """`python -m kdcore.experiments.sweep` for one run; its result row with `key`, `seed`, the devices and
    `extra` added."""
    with tempfile.TemporaryDirectory() as tmp:
        row_file = Path(tmp) / "row.json"
        cmd = [sys.executable, "-m", "kdcore.experiments.sweep", "--params", str(params), "--work", str(work),
               "--name", key, "--set", json.dumps(overrides), "--seed", str(seed), "--row", str(row_file),
               "--device", device]  # fmt: skip
        if synth_device:
            cmd += ["--synth-device", synth_device]
        result = subprocess.run(cmd, cwd=ROOT, stderr=subprocess.PIPE, text=True)
        sys.stderr.write(result.stderr)
        if result.returncode != 0:
            errors = [line for line in result.stderr.splitlines() if "error: " in line]
            reason = errors[-1].split("error: ", 1)[1] if errors else "see the log above"
            raise SystemExit(f"{key} seed {seed} failed (exit {result.returncode}): {reason}")
        row = json.loads(row_file.read_text())
    return {**row, "key": key, "device": device, "synth_device": synth_device or device, **extra}


def measure_queued(
    runs: list[tuple[str, dict, int, dict]], prefix: str, jobs: int, params: Path = ROOT / "params.yaml"
) -> list[dict]:
    """Each (key, overrides, seed, extra) as the DVC experiment `<prefix>-<key>-s<seed>` of this
    project: queued (`dvc exp run --queue`), run by `jobs` DVC queue workers, read back from
    `dvc exp show`; experiments that finished on this commit are not run again. Rows in order,
    each with `key` and `extra` added; a run that failed stops the benchmark with its error line."""
    from kdcore.config import read_yaml
    from tasks.experiments import experiment_row, failure_line, finished_experiments, queue_experiments, run_queue

    def name_of(key: str, seed: int) -> str:
        return re.sub(r"[^A-Za-z0-9_-]+", "-", f"{prefix}-{key}-s{seed}")

    base = read_yaml(params.read_text(), source=str(params))
    named = [(name_of(key, seed), {**overrides, "seed": seed}) for key, overrides, seed, _ in runs]
    queue_experiments(ROOT, base, named)
    run_queue(ROOT, [name for name, _ in named], jobs)
    finished = finished_experiments(ROOT)
    rows = []
    for (name, _), (key, _, _, extra) in zip(named, runs, strict=True):
        if name not in finished:
            raise SystemExit(f"{name} failed: {failure_line(ROOT, name)}")
        rows.append({**experiment_row(finished[name], key), "key": key, "device": "cpu", **extra})
    return rows


class RunTable:
    """Rows of finished runs in a CSV, written after each run so an interrupted sweep keeps them."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.rows = pd.read_csv(path) if path.is_file() else pd.DataFrame()

    def has(self, key: str, seed: int) -> bool:
        return bool(len(self.rows)) and bool(((self.rows["key"] == key) & (self.rows["seed"] == seed)).any())

    def add(self, row: dict) -> None:
        self.rows = pd.concat([self.rows, pd.DataFrame([row])], ignore_index=True)
        with atomic_path(self.path) as tmp:
            self.rows.to_csv(tmp, index=False)
