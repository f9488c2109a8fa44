"""The compact teacher-output cache: per view, the teacher's top-K probabilities and their classes.

With `transfer.cache_topk: K`, build_transfer keeps of each view's soft label only the K largest
probabilities (at temperature 1, largest first) and their class indices (int16): 4 K bytes a view
where the exact cache keeps 4 C (float32 logits of C classes). FKD (Shen and Xing 2022) stores
ImageNet crops this way. They are written in shards under `soft_labels/` as the teacher's pass
goes, so build_transfer holds one chunk of views at a time, and read back by rows.

The probabilities are stored as fp16 log-probabilities, not as fp16 probabilities: fp16 holds no
probability below 6e-8 (and few digits below 6e-5), and the KD term raises each probability to the
power 1/T, so at T = 4 a stored 0 in place of 1e-9 is 0.006 of unnormalised mass lost. A log-
probability in fp16 keeps every probability to about 1.5% of itself.

The KD terms train on a full distribution rebuilt from the K stored probabilities
(`distill.topk_rest`):
- `spread` (the default): the mass the K classes leave, 1 - sum(p_1..p_K), is shared equally by the
  other C - K classes. Every class keeps a finite log-probability, so a tempered softmax of the
  rebuilt log-probabilities (the KD term's softmax(z / T)) is defined and K = 1 still carries the
  teacher's confidence (label smoothing by the teacher's own doubt) rather than a hard label.
- `renormalize`: the K probabilities are scaled to sum to 1 and the other classes get none; a
  student is then pushed to put nothing on classes outside the teacher's top K.
The rebuilt distribution is handed to the losses as log-probabilities in place of logits:
softmax(log p / T) is p^(1/T) renormalised, what the teacher's logits give at temperature T when
K = C.
"""

from __future__ import annotations

import hashlib
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from kdcore.artifacts import canonical_safetensors_header
from kdcore.data.shards import SHARD, SHARD_BYTES, FileRows
from kdcore.errors import DataError

SOFT_LABELS_DIR = "soft_labels"
RESTS = ("spread", "renormalize")
ABSENT = -1.0e4  # log-probability of a class given no mass (renormalize): exp(ABSENT / T) is 0 for any T used
IN_MEMORY_BYTES = 256 << 20  # stored soft labels up to this size are read whole


def top_k(logits: torch.Tensor, k: int) -> tuple[torch.Tensor, torch.Tensor]:
    """(V, C) logits -> the log-probabilities at temperature 1 of the K most probable classes, largest
    first, as fp16 (V, K), and those classes as int16 (V, K). Ties go to the lower class index."""
    logp = F.log_softmax(logits.double(), dim=1)
    order = torch.sort(logp, dim=1, descending=True, stable=True).indices[:, :k]
    return logp.gather(1, order).to(torch.float16), order.to(torch.int16)


def rebuild(logp: torch.Tensor, index: torch.Tensor, num_classes: int, rest: str = "spread") -> torch.Tensor:
    """(V, K) stored log-probabilities and classes -> (V, C) float32 log-probabilities of the full
    distribution (see the module's docstring for `rest`)."""
    if rest not in RESTS:
        raise ValueError(f"rest must be one of {RESTS}, got {rest!r}")
    p = logp.double().exp()
    k = logp.shape[1]
    total = p.sum(1, keepdim=True)
    if rest == "renormalize" or k == num_classes:
        full = torch.zeros(len(p), num_classes, dtype=torch.float64)
        full.scatter_(1, index.long(), p / total.clamp_min(1e-12))
        return full.log().clamp_min(ABSENT).float()
    p = p / total.clamp_min(1.0)  # fp16 rounding may take the sum a hair over 1
    left = (1.0 - p.sum(1, keepdim=True)).clamp_min(0.0) / (num_classes - k)  # (V, 1) each other class's share
    full = left.clamp_min(1e-12).expand(-1, num_classes).clone()
    full.scatter_(1, index.long(), p)
    full = full / full.sum(1, keepdim=True)
    return full.log().float()


class SoftLabelWriter:
    """Appends (V, K) fp16 log-probabilities and int16 classes to `soft_labels/shard-*.safetensors`, one
    shard in memory at a time; each shard's header names K and the class count."""

    def __init__(self, directory: Path, k: int, num_classes: int) -> None:
        self.directory = Path(directory)
        self.directory.mkdir(parents=True, exist_ok=True)
        self.k, self.num_classes = k, num_classes
        self.per_shard = max(1, SHARD_BYTES // (4 * k))
        self._logp: list[torch.Tensor] = []
        self._index: list[torch.Tensor] = []
        self._pending = self.shards = self.count = 0
        self._digest = hashlib.sha256()

    def add(self, logp: torch.Tensor, index: torch.Tensor) -> None:
        logp, index = logp.to(torch.float16).contiguous(), index.to(torch.int16).contiguous()
        self._digest.update(logp.numpy().tobytes())
        self._digest.update(index.numpy().tobytes())
        start = 0
        while start < len(logp):
            take = min(len(logp) - start, self.per_shard - self._pending)
            self._logp.append(logp[start : start + take])
            self._index.append(index[start : start + take])
            self._pending += take
            start += take
            if self._pending == self.per_shard:
                self._flush()

    def _flush(self) -> None:
        from safetensors.torch import save_file

        path = self.directory / SHARD.format(self.shards)
        logp = torch.cat(self._logp) if self._logp else torch.zeros(0, self.k, dtype=torch.float16)
        index = torch.cat(self._index) if self._index else torch.zeros(0, self.k, dtype=torch.int16)
        meta = {"k": str(self.k), "classes": str(self.num_classes)}
        save_file({"logp": logp.contiguous(), "index": index.contiguous()}, str(path), metadata=meta)
        canonical_safetensors_header(path)
        self.shards += 1
        self.count += len(logp)
        self._logp, self._index, self._pending = [], [], 0

    def sha256(self) -> str:
        return self._digest.hexdigest()

    def close(self) -> int:
        """Writes the last shard (an empty set still gets one); returns the number of views written."""
        if self._pending or self.shards == 0:
            self._flush()
        return self.count


class SoftLabels:
    """The stored top-K soft labels, indexed like the exact cache's logits tensor: `labels[idx]` is
    (B, C) float32 log-probabilities rebuilt with `rest`. Read whole when small, by rows otherwise."""

    def __init__(self, directory: Path, rest: str = "spread") -> None:
        from safetensors import safe_open

        self.directory, self.rest = Path(directory), rest
        files = sorted(self.directory.glob("shard-*.safetensors"))
        if not files:
            raise DataError(f"{self.directory}: no soft-label shards; rerun build_transfer")
        try:
            with safe_open(str(files[0]), framework="pt") as handle:
                meta = handle.metadata() or {}
            self.k, self.num_classes = int(meta["k"]), int(meta["classes"])
            self._logp = [FileRows(path, "logp") for path in files]
            self._index = [FileRows(path, "index") for path in files]
        except (KeyError, ValueError) as err:
            raise DataError(f"{self.directory}: not soft-label shards ({err}); rerun build_transfer") from None
        counts = [len(rows) for rows in self._logp]
        self.offsets = np.concatenate([[0], np.cumsum(counts)]).astype(np.int64)
        self._whole: tuple[torch.Tensor, torch.Tensor] | None = None
        if self.nbytes <= IN_MEMORY_BYTES:
            self._whole = (
                torch.cat([rows[:] for rows in self._logp]),
                torch.cat([rows[:] for rows in self._index]),
            )

    @property
    def nbytes(self) -> int:
        return int(self.offsets[-1]) * self.k * 4

    def __len__(self) -> int:
        return int(self.offsets[-1])

    @property
    def shape(self) -> torch.Size:
        return torch.Size((len(self), self.num_classes))

    def stored(self, index) -> tuple[torch.Tensor, torch.Tensor]:
        """The stored (log-probability, class) rows at `index`, in that order."""
        if isinstance(index, slice):
            index = np.arange(len(self))[index]
        index = np.asarray(index, dtype=np.int64).reshape(-1)
        if self._whole is not None:
            return self._whole[0][index], self._whole[1][index]
        logp = torch.empty(len(index), self.k, dtype=torch.float16)
        cls = torch.empty(len(index), self.k, dtype=torch.int16)
        shard_of = np.searchsorted(self.offsets, index, side="right") - 1
        for shard in np.unique(shard_of).tolist():
            where = np.flatnonzero(shard_of == shard)
            local = index[where] - self.offsets[shard]
            logp[where] = self._logp[shard][local]
            cls[where] = self._index[shard][local]
        return logp, cls

    def __getitem__(self, index) -> torch.Tensor:
        if isinstance(index, torch.Tensor):
            index = index.numpy()
        logp, cls = self.stored(index)
        return rebuild(logp, cls, self.num_classes, self.rest)
