"""Atomic file writes and content hashes: an interrupted stage never leaves half a file behind."""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import tempfile
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load_file, save_file

from kdcore.errors import DataError, NoSpace, is_no_space


@contextmanager
def atomic_path(path: str | Path) -> Iterator[Path]:
    """Yields a temporary path beside `path`; renames it onto `path` only if the block succeeds."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    try:
        yield Path(tmp)
        os.replace(tmp, path)
    except Exception as err:
        if is_no_space(err):
            raise NoSpace(path) from None
        raise
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)


@contextmanager
def atomic_dir(path: str | Path) -> Iterator[Path]:
    """Yields an empty directory beside `path`; it replaces `path` (and whatever was there) only if the
    block succeeds, so a failure leaves the earlier directory as it was."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent))
    old = path.with_name(f".{path.name}.old")
    try:
        yield tmp
        shutil.rmtree(old, ignore_errors=True)
        if path.exists():
            os.replace(path, old)
        os.replace(tmp, path)
    except Exception as err:
        if is_no_space(err):
            raise NoSpace(path) from None
        raise
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
        shutil.rmtree(old, ignore_errors=True)


STAGED = ".staged"  # suffix of an output being written, beside the output it will replace


def staged_path(path: str | Path) -> Path:
    path = Path(path)
    return path.with_name(f".{path.name}{STAGED}")


@contextmanager
def replaced_together(*paths: str | Path) -> Iterator[list[Path]]:
    """Yields a staging path beside each of `paths` (directories the block fills); when the block
    succeeds every path is replaced by what was staged, one rename each, after all the writing is
    done; when it fails (a full disk, an error, a kill) none is touched. A stage's outputs, its
    git-tracked training logs with its model, so never disagree: both are the new run's or both the
    old one's. Staging left by a killed run is removed on the next entry."""
    finals = [Path(p) for p in paths]
    staged = [staged_path(p) for p in finals]
    for directory in staged:
        shutil.rmtree(directory, ignore_errors=True)
        directory.parent.mkdir(parents=True, exist_ok=True)
    try:
        yield staged
        olds = []
        for final, new in zip(finals, staged, strict=True):
            old = final.with_name(f".{final.name}.old")
            shutil.rmtree(old, ignore_errors=True)
            if final.exists():
                os.replace(final, old)
                olds.append(old)
            if new.exists():
                os.replace(new, final)
        for old in olds:
            shutil.rmtree(old, ignore_errors=True)
    except Exception as err:
        if is_no_space(err):
            raise NoSpace(getattr(err, "filename", None) or ", ".join(map(str, staged))) from None
        raise
    finally:
        for directory in staged:
            shutil.rmtree(directory, ignore_errors=True)


def write_text(path: str | Path, text: str) -> None:
    with atomic_path(path) as tmp:
        tmp.write_text(text, encoding="utf-8")


def write_json(path: str | Path, obj: Any) -> None:
    write_text(path, json.dumps(obj, indent=2, sort_keys=True) + "\n")


def read_json(path: str | Path) -> Any:
    return json.loads(Path(path).read_text(encoding="utf-8"))


def canonical_safetensors_header(path: str | Path) -> None:
    """Rewrites a safetensors file's JSON header with its keys sorted. The library writes the metadata
    map in an order that varies from process to process; sorted, the same tensors give the same bytes.
    The header keeps its length (the same keys and values), so no data offset moves."""
    with open(path, "r+b") as f:
        size = int.from_bytes(f.read(8), "little")
        header = json.loads(f.read(size))
        text = json.dumps(header, sort_keys=True, separators=(",", ":")).encode()
        if len(text) > size:
            raise ValueError(f"{path}: safetensors header grew when sorted ({len(text)} > {size} bytes)")
        f.seek(8)
        f.write(text + b" " * (size - len(text)))


def save_tensors(path: str | Path, tensors: dict[str, torch.Tensor], meta: dict[str, str] | None = None) -> None:
    """Saves named tensors as safetensors (no pickle), atomically, the same bytes for the same tensors."""
    contiguous = {k: v.detach().cpu().contiguous() for k, v in tensors.items()}
    with atomic_path(path) as tmp:
        save_file(contiguous, str(tmp), metadata=meta)
        canonical_safetensors_header(tmp)


def load_tensors(path: str | Path) -> dict[str, torch.Tensor]:
    path = Path(path)
    if not path.is_file():
        raise DataError(f"{path}: missing; run the stage that writes it first")
    try:
        return load_file(str(path))
    except Exception as err:  # safetensors' own error types: a damaged or foreign file
        raise DataError(f"{path}: not a readable safetensors file ({err}); rerun the stage that writes it") from None


def save_with(path: str | Path, writer: Callable[[Path], None]) -> None:
    """Calls `writer(tmp_path)` and moves the result onto `path` atomically."""
    with atomic_path(path) as tmp:
        writer(tmp)


def sha256_file(path: str | Path, chunk_bytes: int = 1 << 20) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        while block := fh.read(chunk_bytes):
            digest.update(block)
    return digest.hexdigest()


def sha256_dir(path: str | Path) -> str:
    """sha256 over a directory's files (relative names and contents, in name order)."""
    digest = hashlib.sha256()
    for file in sorted(p for p in Path(path).rglob("*") if p.is_file()):
        digest.update(str(file.relative_to(path)).encode() + b"\0")
        digest.update(sha256_file(file).encode())
    return digest.hexdigest()


def sha256_tensors(tensors: dict[str, torch.Tensor]) -> str:
    """A hash of tensor contents that does not depend on how they were serialised."""
    digest = hashlib.sha256()
    for name in sorted(tensors):
        t = tensors[name].detach().cpu().contiguous()
        digest.update(f"{name}:{t.dtype}:{tuple(t.shape)}".encode())
        digest.update(t.view(torch.uint8).numpy().tobytes() if t.numel() else b"")
    return digest.hexdigest()
