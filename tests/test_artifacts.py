"""Artifacts: the same tensors give the same bytes, whatever process writes them."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import torch

from kdcore.artifacts import load_tensors, save_tensors

WRITE = """
import sys, torch
from kdcore.artifacts import save_tensors
save_tensors(sys.argv[1], {"b": torch.arange(5.0), "a": torch.ones(2, 3)},
             {"teachers": "cnn,mlp", "ensemble": "mean", "zeta": "1", "alpha": "2"})
"""


def test_safetensors_metadata_is_written_in_one_order(tmp_path: Path) -> None:
    root = Path(__file__).resolve().parents[1]
    files = [tmp_path / f"{i}.safetensors" for i in range(4)]
    for f in files:  # separate processes: the library's metadata order varies between them
        subprocess.run([sys.executable, "-c", WRITE, str(f)], cwd=root, check=True)
    assert len({f.read_bytes() for f in files}) == 1
    raw = files[0].read_bytes()
    header = json.loads(raw[8 : 8 + int.from_bytes(raw[:8], "little")])
    assert list(header["__metadata__"]) == ["alpha", "ensemble", "teachers", "zeta"]
    loaded = load_tensors(files[0])
    assert torch.equal(loaded["b"], torch.arange(5.0)) and torch.equal(loaded["a"], torch.ones(2, 3))
    save_tensors(tmp_path / "again.safetensors", loaded, {"zeta": "1", "alpha": "2", "teachers": "cnn,mlp",
                                                        "ensemble": "mean"})  # fmt: skip
    assert (tmp_path / "again.safetensors").read_bytes() == raw
