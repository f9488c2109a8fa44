"""The batches of one training epoch, read by DataLoader worker processes when the data is on disk.

Batch b of epoch e holds the samples at positions b * batch_size ... of that epoch's seeded order,
and whatever it draws at random (the teacher's online shifts) comes from a generator seeded by
(seed, e, b) alone. So any batch can be made by any process in any order, and the batches, hence
the trained model, are the same with 0, 1 or 8 workers. Under torchrun each rank makes only its part
of every batch (kdcore/distributed.py).

Data read on demand from shards (kdcore.data.prepared.SplitImages, the transfer pool's images) is read
and rendered (shifts, crops, cutmix) in `data.workers` processes while the model trains on the
batch before. Data held in memory (the bundled digits) is rendered by one thread of the training
process, a few batches ahead (torch's kernels release the GIL, so it runs beside the training
thread), where a worker process would only add the cost of sending each batch back. With
`data.workers: 0` every batch is made in line, in the training thread.
"""

from __future__ import annotations

import math
import sys
from collections import deque
from collections.abc import Iterable, Iterator
from typing import Any

import torch
from torch.utils.data import DataLoader, Dataset

PREFETCH = 4  # batches each worker reads ahead


def batch_seed(seed: int, epoch: int, number: int) -> int:
    """The seed of batch `number` of `epoch`: a function of the three alone."""
    return ((seed * 100_003 + epoch) * 1_000_003 + number) % (2**63)


def on_disk(train_set: Any) -> bool:
    """Whether the set's samples are read on demand (not a tensor in memory)."""
    x = getattr(train_set, "x", None)
    return x is not None and not isinstance(x, torch.Tensor)


class EpochBatches(Dataset):
    """Item b: (batch b of the epoch as `train_set.batch` makes it, this rank's part, the loss factor)."""

    def __init__(
        self, train_set: Any, order: torch.Tensor, batch_size: int, seed: int, epoch: int, parts: Any = None
    ) -> None:
        self.train_set, self.order, self.batch_size = train_set, order, batch_size
        self.seed, self.epoch = seed, epoch
        self.parts = parts  # None in one process; else batch length -> (slice, factor), fixed before workers start

    def __len__(self) -> int:
        return math.ceil(len(self.order) / self.batch_size)

    def __getitem__(self, number: int) -> tuple[dict[str, torch.Tensor], float]:
        idx = self.order[number * self.batch_size : (number + 1) * self.batch_size]
        generator = torch.Generator().manual_seed(batch_seed(self.seed, self.epoch, number))
        if self.parts is None:
            return self.train_set.batch(idx, generator), 1.0
        part, factor = self.parts(len(idx))
        return self.train_set.batch(idx, generator, part=part), factor


def prefetched(batches: EpochBatches, ahead: int = PREFETCH) -> Iterator[tuple[dict[str, torch.Tensor], float]]:
    """The batches in order, each made by one background thread `ahead` batches before it is wanted."""
    from concurrent.futures import ThreadPoolExecutor

    with ThreadPoolExecutor(max_workers=1, thread_name_prefix="kdflow-batches") as pool:
        pending = deque(pool.submit(batches.__getitem__, b) for b in range(min(ahead, len(batches))))
        following = len(pending)
        while pending:
            item = pending.popleft().result()
            if following < len(batches):
                pending.append(pool.submit(batches.__getitem__, following))
                following += 1
            yield item


def worker_context() -> str | None:
    """How DataLoader workers start: forked on Linux (they share the open data, nothing is copied), except
    in a process that has run Prefect in-process: Prefect's exit hooks fail in a forked child, which then
    exits with status 1 after its work, so there the workers come from a clean fork server (the batches'
    recipe is sent to them). Elsewhere, the platform's default."""
    if not sys.platform.startswith("linux"):
        return None
    return "forkserver" if "prefect" in sys.modules else "fork"


def gathers_only(train_set: Any) -> bool:
    """Whether a batch is only rows gathered from tensors: views rendered once, teacher outputs in memory
    (a top-K cache rebuilds its distributions per batch)."""
    if getattr(train_set, "rendered", None) is None:
        return False
    labels = getattr(train_set, "teacher_logits", None)
    extras = getattr(train_set, "extras", {})
    return all(isinstance(v, torch.Tensor) for v in [*extras.values()] + ([labels] if labels is not None else []))


def epoch_batches(batches: EpochBatches, workers: int) -> Iterable[tuple[dict[str, torch.Tensor], float]]:
    """The epoch's batches in order: from `workers` processes when the data is on disk, from a thread of
    this process when it is in memory, in line with `workers` 0."""
    if workers <= 0 or len(batches) <= 1:
        return (batches[b] for b in range(len(batches)))
    if gathers_only(batches.train_set):  # a thread would cost more than it hides
        return (batches[b] for b in range(len(batches)))
    if not on_disk(batches.train_set):
        return prefetched(batches)
    context = worker_context()
    return DataLoader(
        batches, batch_size=None, shuffle=False, num_workers=min(workers, len(batches)), prefetch_factor=PREFETCH,
        multiprocessing_context=context, persistent_workers=False,
    )  # fmt: skip
