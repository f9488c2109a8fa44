"""What the benchmark scripts share: one (run, seed) through the real stages in its own process, and
a CSV of finished runs that makes a rerun measure only what is missing."""

from __future__ import annotations

import json
import subprocess
import sys
import tempfile
from pathlib import Path

import pandas as pd

from kdcore.artifacts import atomic_path

ROOT = Path(__file__).resolve().parents[1]


def measure(key: str, overrides: dict, seed: int, work: Path, params: Path, **extra: object) -> dict:
    """`python -m kdcore.sweep` for one run; its result row with `key`, `seed` and `extra` added."""
    with tempfile.TemporaryDirectory() as tmp:
        row_file = Path(tmp) / "row.json"
        cmd = [sys.executable, "-m", "kdcore.sweep", "--params", str(params), "--work", str(work),
               "--name", key, "--set", json.dumps(overrides), "--seed", str(seed), "--row", str(row_file)]  # fmt: skip
        result = subprocess.run(cmd, cwd=ROOT)
        if result.returncode != 0:
            raise SystemExit(f"{key} seed {seed} failed (exit {result.returncode})")
        row = json.loads(row_file.read_text())
    return {**row, "key": key, **extra}


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
