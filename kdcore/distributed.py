"""Training on several processes and machines, through torch's own launcher (torchrun).

With `distributed.nproc_per_node` (and `nnodes`) above 1 in params, a training stage (train_teacher,
distill, train_student_scratch) started as usual, `python -m kdcore <stage>` (the DVC command stays
one line), starts itself again under `python -m torch.distributed.run` with that many processes,
and waits for them. Each process joins the group (gloo on the CPU; NCCL on GPUs, one GPU per process), reads the same
data and builds the same model; DistributedDataParallel averages the gradients.

What stays as in one process:
- the global batch: each step's `batch_size` samples (the same seeded order) are cut into one part
  per rank, and each rank's loss is scaled by its share, so the averaged gradient is the gradient of
  the whole batch's mean loss (BatchNorm layers see their rank's part only);
- the files: rank 0 alone writes the model, the logs, the checkpoints and the metrics; the other ranks
  end each training with it and write nothing;
- resuming: rank 0 reads the last epoch's checkpoint and sends it to the others, so a run killed on
  any rank resumes on every rank, and no shared file system is needed.
The same params and world size give the same result; another world size gives another BatchNorm
and summation order, so numbers close to, not equal to, the single process's.

Several machines: every machine runs the same command with the same params and data;
`distributed.master_addr`/`master_port` name rank 0's machine, and the environment variable
KDFLOW_NODE_RANK says which machine this is (0: the one that writes, where `dvc repro` runs).
"""

from __future__ import annotations

import contextlib
import ctypes
import os
import shutil
import signal
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import torch

from kdcore.errors import ConfigError

NODE_RANK_ENV = "KDFLOW_NODE_RANK"
STAGES = ("train_teacher", "distill", "train_student_scratch")  # the stages that train with fit()


def launched() -> bool:
    """Whether this process is one of torchrun's workers."""
    return "LOCAL_RANK" in os.environ and "WORLD_SIZE" in os.environ


def active() -> bool:
    return torch.distributed.is_available() and torch.distributed.is_initialized()


def rank() -> int:
    return torch.distributed.get_rank() if active() else 0


def world_size() -> int:
    return torch.distributed.get_world_size() if active() else 1


def is_writer() -> bool:
    """Rank 0, or the only process: the one that writes files."""
    return rank() == 0


def torchrun_command(cfg, argv: list[str]) -> list[str]:
    """The torchrun command that runs `python -m kdcore <argv>` on `cfg.nproc_per_node` processes of
    this machine, as machine KDFLOW_NODE_RANK of `cfg.nnodes`."""
    node_rank = os.environ.get(NODE_RANK_ENV, "0")
    cmd = [sys.executable, "-m", "torch.distributed.run", f"--nproc-per-node={cfg.nproc_per_node}"]
    if cfg.nnodes == 1:
        cmd += ["--standalone"]
    else:
        cmd += [f"--nnodes={cfg.nnodes}", f"--node-rank={node_rank}",
                f"--master-addr={cfg.master_addr}", f"--master-port={cfg.master_port}"]  # fmt: skip
    return [*cmd, "-m", "kdcore", *argv]


def die_with_parent(sig: int = signal.SIGKILL) -> None:
    """Asks Linux to send `sig` to this process when its parent dies (PR_SET_PDEATHSIG): torchrun starts its
    workers in sessions of their own, so a killed launcher would otherwise leave them training."""
    with contextlib.suppress(OSError, AttributeError):  # not Linux: nothing to ask
        ctypes.CDLL(None, use_errno=True).prctl(1, int(sig))


def relaunch(cfg, argv: list[str]) -> int:
    """Runs the stage under torchrun and returns its exit status (a worker's kdflow error line is
    printed by that worker)."""
    cmd = torchrun_command(cfg, argv)
    env = {**os.environ, "OMP_NUM_THREADS": os.environ.get("OMP_NUM_THREADS", "1")}
    print(f"kdflow: {cfg.nproc_per_node * cfg.nnodes} processes: {' '.join(cmd[1:])}", file=sys.stderr, flush=True)
    ends_with_us = (lambda: die_with_parent(signal.SIGTERM)) if sys.platform.startswith("linux") else None
    return subprocess.run(cmd, env=env, preexec_fn=ends_with_us).returncode


def init(device: torch.device) -> None:
    """Joins the process group torchrun set up: NCCL for CUDA devices, gloo otherwise."""
    if active():
        return
    if sys.platform.startswith("linux"):
        die_with_parent()  # a worker ends with its launcher
    backend = "gloo"
    if device.type == "cuda":  # NCCL for the gradients; gloo for the few CPU tensors (metric sums, resume state)
        backend = "cpu:gloo,cuda:nccl"
        torch.cuda.set_device(int(os.environ.get("LOCAL_RANK", "0")))
    torch.distributed.init_process_group(backend=backend)


def check_devices(cfg, device: torch.device, gpus: int | None = None) -> None:
    """One GPU per process: `distributed.nproc_per_node` CUDA processes need that many GPUs on each machine
    (`gpus`: how many this one has; default torch.cuda.device_count())."""
    if device.type != "cuda":
        return
    gpus = torch.cuda.device_count() if gpus is None else gpus
    if cfg.nproc_per_node > gpus:
        raise ConfigError(
            f"distributed.nproc_per_node: {cfg.nproc_per_node} processes on device {device.type} but this machine "
            f"has {gpus} CUDA device(s): one process per GPU (or device: cpu for gloo processes)"
        )


def shutdown() -> None:
    if active():
        torch.distributed.destroy_process_group()


def local_device(device: torch.device) -> torch.device:
    """This rank's device: its own GPU under torchrun (cuda:LOCAL_RANK), the CPU as it is."""
    if device.type == "cuda" and launched():
        return torch.device("cuda", int(os.environ.get("LOCAL_RANK", "0")))
    return device


def part_of_batch(batch_size: int, me: int | None = None, size: int | None = None) -> tuple[slice, float]:
    """This rank's part of a global batch of `batch_size` samples, and the factor that makes the ranks'
    averaged gradient the whole batch's: (part size x world size) / batch size. Parts differ by at most
    one sample. A rank left without samples (a last batch smaller than the world) takes the batch's
    first sample with factor 0. `me` and `size` default to this process's rank and world size."""
    size = world_size() if size is None else size
    me = rank() if me is None else me
    if size == 1:
        return slice(0, batch_size), 1.0
    base, extra = divmod(batch_size, size)
    start = me * base + min(me, extra)
    stop = start + base + (me < extra)
    if stop == start:
        return slice(0, 1), 0.0
    return slice(start, stop), (stop - start) * size / batch_size


def wrap(model: torch.nn.Module, device: torch.device) -> torch.nn.Module:
    """DistributedDataParallel around `model` (rank 0's weights are sent to every rank)."""
    if world_size() == 1:
        return model
    import warnings

    from torch.nn.parallel import DistributedDataParallel

    # a 1-channel convolution's weight gradient comes with other strides than DDP's bucket: a copy, not an error
    warnings.filterwarnings("ignore", message="Grad strides do not match bucket view strides")
    ids = [device.index] if device.type == "cuda" else None
    return DistributedDataParallel(model, device_ids=ids)


def sum_over_ranks(values: dict[str, float]) -> dict[str, float]:
    """Each value summed over the ranks (the same keys on every rank)."""
    if world_size() == 1 or not values:
        return values
    names = sorted(values)
    tensor = torch.tensor([float(values[n]) for n in names], dtype=torch.float64)
    torch.distributed.all_reduce(tensor)
    return dict(zip(names, tensor.tolist(), strict=True))


def from_writer(obj: Any) -> Any:
    """Rank 0's `obj` on every rank (the resume state)."""
    if world_size() == 1:
        return obj
    box = [obj if is_writer() else None]
    torch.distributed.broadcast_object_list(box, src=0)
    return box[0]


@contextlib.contextmanager
def outputs(replaced_together, *paths: Path) -> Iterator[list[Path]]:
    """`replaced_together(*paths)` on rank 0; on the other ranks, scratch directories of their own,
    removed afterwards, so no rank touches rank 0's staging."""
    if is_writer():
        with replaced_together(*paths) as staged:
            yield staged
        return
    scratch = Path(tempfile.mkdtemp(prefix=f"kdflow-rank{rank()}-"))
    try:
        yield [scratch / str(i) for i in range(len(paths))]
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
