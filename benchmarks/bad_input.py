"""Bad parameters and broken data through the stages' command line, as a user would give them.

    python benchmarks/bad_input.py [--code DIR] [--out reports/bad_input.csv]
    python benchmarks/bad_input.py --report reports/bad_input_before.csv reports/bad_input.csv


Each case writes a params file (and data where the case needs it) into a temporary directory and
runs `python -m kdcore <stage> --params FILE` with the code of `--code` (default: this checkout; give
an older checkout to measure its behaviour). Params cases run `check_params`, the stage DVC runs
first; data cases run `prepare`; model-file cases run the stage that loads the file. A case passes
when it ends with exit status 2 or 3, exactly one line on stderr, no traceback, and no file written
outside the case's own inputs. Prints a table and writes it as CSV.
"""

from __future__ import annotations

import argparse
import copy
import csv
import gzip
import os
import struct
import subprocess
import sys
import tempfile
from collections.abc import Callable
from pathlib import Path

import numpy as np
import yaml

ROOT = Path(__file__).resolve().parents[1]
BASE = yaml.safe_load((ROOT / "params.yaml").read_text())
SPLITS = {"teacher_train": 200, "transfer": 200, "test": 100, "validation": 0}


def setp(raw: dict, dotted: str, value: object) -> dict:
    raw = copy.deepcopy(raw)
    node = raw
    *parents, last = dotted.split(".")
    for key in parents:
        node = node.setdefault(key, {})
    node[last] = value
    return raw


class TextEdit:
    """An edit of the params file's text (for what a dict cannot hold: duplicate keys, YAML spellings)."""

    def __init__(self, old: str, new: str) -> None:
        self.old, self.new = old, new

    def __call__(self, text: str) -> str:
        if self.old not in text:
            raise SystemExit(f"case edit {self.old!r} not found in the params text")
        return text.replace(self.old, self.new, 1)


text_edit = TextEdit


# params cases: (name, edit of the raw dict or of the file's text)
PARAMS_CASES: list[tuple[str, Callable]] = [
    ("typo in a key (student.train.epoch)", lambda r: setp(r, "student.train.epoch", 30)),
    ("unknown top-level key (foo)", lambda r: setp(r, "foo", 1)),
    ("gate.min_accuracy 1.5 (read by no stage)", lambda r: setp(r, "gate.min_accuracy", 1.5)),
    ("epochs: 0", lambda r: setp(r, "student.train.epochs", 0)),
    ("epochs: yes", text_edit("epochs: 30\n", "epochs: yes\n")),
    ('epochs: "30" (a string)', text_edit("epochs: 30\n", 'epochs: "30"\n')),
    ("epochs: 30.5", lambda r: setp(r, "student.train.epochs", 30.5)),
    ('lr: "0.003" (a string)', text_edit("lr: 0.003", 'lr: "0.003"')),
    ("lr: -1", lambda r: setp(r, "student.train.lr", -1)),
    ("a key written twice (seed)", text_edit("seed: 0\n", "seed: 0\nseed: 1\n")),
    ("not YAML (unclosed bracket)", text_edit("seed: 0\n", "seed: [0\n")),
    ("tab indentation", text_edit("  source: mnist5k", "\tsource: mnist5k")),
    ("top level is a list", lambda r: [r]),
    ("empty file", lambda r: None),
    ("model name typo (cnnn) with its keys", lambda r: setp(r, "teachers.cnn.model.name", "cnnn")),
    ("student model name typo (mpl)", lambda r: setp(r, "student.model.name", "mpl")),
    ("unknown data source", lambda r: setp(r, "data.source", "cifar")),
    ("npz without data.path", lambda r: setp(r, "data.source", "npz")),
    ("bundled data with a path", lambda r: setp(r, "data.path", "x.npz")),
    ("negative split size", lambda r: setp(r, "data.splits.test", -5)),
    ("unknown optimizer", lambda r: setp(r, "student.train.optimizer", "lion")),
    ("unknown loss term", lambda r: setp(r, "distill.terms", [{"name": "kdd", "weight": 1.0}])),
    ("temperature 0", lambda r: setp(r, "distill.temperature", 0)),
    ("unknown device", lambda r: setp(r, "device", "tpu")),
    ("ensemble weights without one per teacher", lambda r: setp(r, "transfer.ensemble", {"method": "weights"})),
    ("teacher name with a space", lambda r: {**r, "teachers": {"my teacher": r["teachers"]["cnn"]}}),
    ("no teachers", lambda r: setp(r, "teachers", {})),
    ("unknown transfer.mix", lambda r: setp(r, "transfer.mix", "cutout")),
    ("synth.teacher not in teachers", lambda r: setp(r, "synth.teacher", "big")),
    ("exclude_classes names a class the data lacks", lambda r: setp(r, "transfer.exclude_classes", ["eleven"])),
    ("low-bit bits 9", lambda r: setp(r, "quantize.low_bit.bits", 9)),
    ("lifelong method unknown", lambda r: setp(r, "lifelong.method", "ewc")),
    ("lifelong gate max_drop 2", lambda r: setp(r, "lifelong.gate.max_drop", 2)),
    ("orchestration.parallel 0", lambda r: setp(r, "orchestration.parallel", 0)),
    ("paths.prepared a list", lambda r: setp(r, "paths.prepared", ["a"])),
    ("cpu_threads: on", text_edit("cpu_threads: 1\n", "cpu_threads: on\n")),
    ("subset 1.5", lambda r: setp(r, "teachers.cnn.subset", 1.5)),
]


def npz(x: np.ndarray, y: np.ndarray) -> Callable[[Path], dict]:
    def make(root: Path) -> dict:
        np.savez(root / "data.npz", x=x, y=y)
        return {"source": "npz", "path": str(root / "data.npz")}

    return make


def raw_file(name: str, payload: bytes, source: str) -> Callable[[Path], dict]:
    def make(root: Path) -> dict:
        (root / name).write_bytes(payload)
        return {"source": source, "path": str(root / name)}

    return make


def idx(images: bytes | None = None, labels: bytes | None = None) -> Callable[[Path], dict]:
    def header(ndim: int, shape: tuple[int, ...], body: bytes) -> bytes:
        return bytes([0, 0, 8, ndim]) + struct.pack(f">{len(shape)}I", *shape) + body

    good_x = header(3, (600, 8, 8), IMAGES.tobytes())
    good_y = header(1, (600,), LABELS.astype(np.uint8).tobytes())

    def make(root: Path) -> dict:
        folder = root / "idx"
        folder.mkdir()
        (folder / "d-images-idx3-ubyte.gz").write_bytes(images if images is not None else gzip.compress(good_x))
        (folder / "d-labels-idx1-ubyte.gz").write_bytes(labels if labels is not None else gzip.compress(good_y))
        return {"source": "idx", "path": str(folder)}

    return make


def folder(classes: dict[str, list[bytes | np.ndarray]]) -> Callable[[Path], dict]:
    def make(root: Path) -> dict:
        from PIL import Image

        for name, files in classes.items():
            (root / "folder" / name).mkdir(parents=True)
            for i, item in enumerate(files):
                path = root / "folder" / name / f"{i}.png"
                if isinstance(item, bytes):
                    path.write_bytes(item)
                else:
                    Image.fromarray(item).save(path)
        return {"source": "imagefolder", "path": str(root / "folder")}

    return make


RNG = np.random.default_rng(0)
IMAGES = RNG.integers(0, 256, (600, 8, 8), dtype=np.uint8)
LABELS = np.arange(600) % 10


def object_npz(root: Path) -> dict:
    x = np.empty(600, dtype=object)
    x[:] = [IMAGES[i] for i in range(600)]
    np.savez(root / "data.npz", x=x, y=LABELS)
    return {"source": "npz", "path": str(root / "data.npz")}


def missing_y(root: Path) -> dict:
    np.savez(root / "data.npz", x=IMAGES)
    return {"source": "npz", "path": str(root / "data.npz")}


def with_label(i: int, value: int) -> np.ndarray:
    y = LABELS.copy()
    y[i] = value
    return y


def cut_gz() -> bytes:
    data = gzip.compress(bytes([0, 0, 8, 3]) + struct.pack(">3I", 600, 8, 8) + IMAGES.tobytes())
    return data[:-40]


DATA_CASES: list[tuple[str, Callable[[Path], dict]]] = [
    ("npz: one class", npz(IMAGES, np.zeros(600, int))),
    ("npz: labels of -1", npz(IMAGES, np.where(LABELS == 3, -1, LABELS))),
    ("npz: a label out of range (255)", npz(IMAGES, with_label(7, 255))),
    ("npz: 2x2 images", npz(IMAGES[:, :2, :2], LABELS)),
    ("npz: object array", object_npz),
    ("npz: not a zip", raw_file("data.npz", b"hello, not an npz", "npz")),
    ("npz: missing y", missing_y),
    ("npz: x and y of different lengths", npz(IMAGES, LABELS[:500])),
    ("npz: float labels 0.5", npz(IMAGES, LABELS + 0.5)),
    ("npz: NaN pixels", npz(np.where(RNG.random(IMAGES.shape) < 0.01, np.nan, IMAGES / 255.0), LABELS)),
    ("npz: pixels in 0..255 as float", npz(IMAGES.astype(np.float32), LABELS)),
    ("npz: string pixels", npz(IMAGES.astype(str), LABELS)),
    ("npz: 5-D x", npz(IMAGES[:, None, None], LABELS)),
    ("npz: too few samples for the splits", npz(IMAGES[:300], LABELS[:300])),
    ("idx: .gz cut short", idx(images=cut_gz())),
    ("idx: header with 5 dimensions", idx(images=gzip.compress(bytes([0, 0, 8, 5]) + b"\x00" * 8))),
    ("idx: bad magic number", idx(images=gzip.compress(b"\x08\x08\x08\x03garbage"))),
    (
        "idx: header says more bytes than held",
        idx(images=gzip.compress(bytes([0, 0, 8, 3]) + struct.pack(">3I", 600, 8, 8))),
    ),
    ("idx: not gzip despite .gz", idx(images=b"plain bytes")),
    ("imagefolder: one class", folder({"seven": [IMAGES[i] for i in range(20)]})),
    ("imagefolder: a file that is not an image", folder({"a": [IMAGES[0]] * 10, "b": [b"not a png"] * 10})),
    ("imagefolder: images of two sizes", folder({"a": [IMAGES[0]] * 10, "b": [IMAGES[0][:6, :6]] * 10})),
    ("imagefolder: an empty class directory", folder({"a": [IMAGES[0]] * 10, "b": []})),
    ("data.path missing", lambda root: {"source": "npz", "path": str(root / "nope.npz")}),
]


def model_file_cases() -> list[tuple[str, str, Callable[[Path], dict]]]:
    """(name, stage, make): files a user points params at, and the device setting."""

    def weights(payload: bytes) -> Callable[[Path], dict]:
        def make(root: Path) -> dict:
            (root / "w.pt").write_bytes(payload)
            return {"student": {**BASE["student"], "model": {"name": "resnet18", "weights": str(root / "w.pt")}}}

        return make

    def pretrained(payload: bytes) -> Callable[[Path], dict]:
        def make(root: Path) -> dict:
            (root / "t.pt").write_bytes(payload)
            teacher = {"model": BASE["teachers"]["cnn"]["model"], "pretrained": str(root / "t.pt")}
            return {"teachers": {"cnn": teacher}}

        return make

    def onnx_teacher(root: Path) -> dict:
        (root / "t.onnx").write_bytes(b"not onnx")
        return {"teachers": {"cnn": {"onnx": str(root / "t.onnx")}}}

    cuda = [("device: cuda without a GPU", "train_teacher", lambda root: {"device": "cuda"})]
    return [
        *([] if _has_cuda() else cuda),
        ("weights: a torch.save zip, not safetensors", "train_student_scratch", weights(b"PK\x03\x04zip")),
        ("weights: a pickle, not safetensors", "train_student_scratch", weights(b"\x80\x04\x95pickle")),
        ("teacher pretrained: a pickle", "train_teacher", pretrained(b"\x80\x04\x95pickle")),
        ("teacher onnx: not ONNX", "train_teacher", onnx_teacher),
    ]


def _has_cuda() -> bool:
    try:
        import torch

        return torch.cuda.is_available()
    except ImportError:
        return False


def files_under(root: Path) -> set[str]:
    return {str(p.relative_to(root)) for p in root.rglob("*") if p.is_file()}


def run(code: Path, root: Path, stage: str, params_text: str) -> tuple[int, list[str], set[str]]:
    (root / "params.yaml").write_text(params_text)
    before = files_under(root)
    env = {**os.environ, "TQDM_DISABLE": "1", "PYTHONPATH": str(code)}
    result = subprocess.run([sys.executable, "-m", "kdcore", stage, "--params", "params.yaml"], cwd=root, env=env,
                            capture_output=True, text=True, timeout=600)  # fmt: skip
    written = files_under(root) - before
    lines = [line for line in result.stderr.splitlines() if line.strip() and "warn" not in line.lower()]
    return result.returncode, lines, written


def small(raw: dict, root: Path) -> dict:
    raw = copy.deepcopy(raw)
    raw["paths"] = {k: str(root / "out" / v) for k, v in raw["paths"].items()}
    raw["data"]["splits"] = dict(SPLITS)
    return raw


def prepare_good(code: Path, root: Path) -> None:
    """Prepared data of the bundled digits, for the cases that need a stage after prepare."""
    raw = small(BASE, root)
    raw["data"]["source"] = "digits"
    code_, lines, _ = run(code, root, "prepare", yaml.safe_dump(raw, sort_keys=False))
    assert code_ == 0, lines


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--code", type=Path, default=ROOT, help="the checkout whose kdcore runs")
    parser.add_argument("--out", type=Path, default=ROOT / "reports" / "bad_input.csv")
    parser.add_argument("--label", default="after")
    parser.add_argument("--report", nargs=2, type=Path, metavar=("BEFORE", "AFTER"),
                        help="write reports/bad_input.md from two runs' CSV files; run nothing")  # fmt: skip
    args = parser.parse_args()
    if args.report:
        return write_report(*args.report)
    global BASE
    BASE = yaml.safe_load((args.code / "params.yaml").read_text())  # the params that code accepts
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for i, (name, edit) in enumerate(PARAMS_CASES):
            root = Path(tmp) / f"p{i}"
            root.mkdir()
            raw = small(BASE, root)
            raw["data"]["splits"] = dict(SPLITS)
            if isinstance(edit, TextEdit):
                text = edit(yaml.safe_dump(raw, sort_keys=False))
            else:
                changed = edit(raw)
                text = "" if changed is None else yaml.safe_dump(changed, sort_keys=False)
            rows.append(("params", name, "check_params", *run(args.code, root, "check_params", text)))
        for i, (name, make) in enumerate(DATA_CASES):
            root = Path(tmp) / f"d{i}"
            root.mkdir()
            raw = small(BASE, root)
            raw["data"] = {**raw["data"], **make(root)}
            rows.append(
                ("data", name, "prepare", *run(args.code, root, "prepare", yaml.safe_dump(raw, sort_keys=False)))
            )
        for i, (name, stage, make) in enumerate(model_file_cases()):
            root = Path(tmp) / f"m{i}"
            root.mkdir()
            prepare_good(args.code, root)
            raw = small(BASE, root)
            raw["data"]["source"] = "digits"
            raw.update(make(root))
            rows.append(("model file", name, stage, *run(args.code, root, stage, yaml.safe_dump(raw, sort_keys=False))))
    table = []
    for kind, name, stage, code, lines, written in rows:
        traceback = any(line.startswith("Traceback") for line in lines)
        clean = code in (2, 3) and len(lines) == 1 and not traceback
        table.append({"kind": kind, "case": name, "stage": stage, "code": args.label, "exit": code,
                      "stderr_lines": len(lines), "traceback": traceback, "one_clear_line": clean,
                      "files_written": len(written), "last_line": (lines[-1] if lines else "")[:220]})  # fmt: skip
    args.out.parent.mkdir(parents=True, exist_ok=True)
    with open(args.out, "w", newline="") as fh:
        writer = csv.DictWriter(fh, fieldnames=list(table[0]))
        writer.writeheader()
        writer.writerows(table)
    for kind in ("params", "data", "model file"):
        part = [r for r in table if r["kind"] == kind]
        print(f"{args.label}: {kind}: {sum(r['one_clear_line'] for r in part)} of {len(part)} end in one clear line")
    for r in table:
        mark = "ok " if r["one_clear_line"] else "BAD"
        print(f"{mark} exit {r['exit']} lines {r['stderr_lines']:>3} | {r['case']}: {r['last_line'][:150]}")
    return 0


def write_report(before_csv: Path, after_csv: Path) -> int:
    """reports/bad_input.md: each case's last line before and after, and the counts."""
    import pandas as pd

    before, after = pd.read_csv(before_csv).fillna(""), pd.read_csv(after_csv).fillna("")
    keys = ["kind", "case", "stage"]
    both = before.merge(after, on=keys, how="right", suffixes=("_before", "_after"), indicator=True)
    both = both.rename(columns={"_merge": "origin"})
    new = both["origin"] == "right_only"  # cases added after the before run: no before figure
    lines = ["# Bad parameters and broken data: before and after", "",
             f"Made by `python benchmarks/bad_input.py` with the code before ({before_csv.name}) and after "
             f"({after_csv.name}) the fix; each case runs `python -m kdcore <stage>` on a params file of its own. "
             "A case is clear when it exits with status 2 or 3 and one line on stderr, no traceback; "
             "`files` counts files the failed command wrote. Cases added after the before run have no before "
             "figure (—).", "",
             "| kind | cases | one clear line before | after |", "|---|---:|---:|---:|"]  # fmt: skip
    for kind in ("params", "data", "model file"):
        part, old = both[both.kind == kind], both[(both.kind == kind) & ~new]
        added = f" (of {len(old)}; {len(part) - len(old)} added later)" if len(part) > len(old) else ""
        lines.append(f"| {kind} | {len(part)} | {int(old.one_clear_line_before.astype(bool).sum())}{added} | "
                     f"{int(part.one_clear_line_after.sum())} |")  # fmt: skip
    lines += ["", "| case | stage | before: exit, lines, last line | after: exit, files, line |", "|---|---|---|---|"]
    for r in both.itertuples():
        cell = lambda text: str(text).replace("|", "/")[:160]  # noqa: E731
        was = f"{r.exit_before}, {r.stderr_lines_before}: {cell(r.last_line_before)}"
        was = "—" if r.origin == "right_only" else was
        lines.append(f"| {r.case} | {r.stage} | {was} | "
                     f"{r.exit_after}, {r.files_written_after}: {cell(r.last_line_after)} |")  # fmt: skip
    out = after_csv.with_suffix(".md")
    out.write_text("\n".join(lines) + "\n")
    print(f"{len(both)} cases -> {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
