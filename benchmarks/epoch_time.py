"""distill's time per epoch against a plain PyTorch loop that trains the same student on the same batches.

    python benchmarks/epoch_time.py --params params.yaml [--transfer DIR --prepared DIR] [--repeats 3]
                                    [--label digits] [--csv reports/epoch_time.csv]

Both sides train a fresh student (the same initial weights) for one epoch over the transfer views with
distill.terms' CE + KD at distill.temperature, batch size and learning rate from params, on one CPU
thread, in this one process, alternating so that the machine's drift hits both alike (`--device cuda`: on the GPU,
under the autocast and memory layout of params `gpu`, the plain loop copying each batch to it):
- kdflow: `kdcore.training.fit`, as the distill stage runs it (views rendered per batch from the source
  images: shifts, crops, cutmix, a few batches ahead by a second thread with data.workers > 0, as
  kdcore/batches.py says; the teacher's cached soft labels read per batch; the loss through kdcore's
  Objective; the bookkeeping of losses and accuracy);
- plain: the views rendered once before the clock starts (kdflow's one-time rendering of views that fit
  in memory is timed apart and printed), then `for x, y, t in batches: loss(model(x))
  .backward(); optimizer.step()`: the least a training loop can do.
Prints the seconds per epoch of each (median of the repeats) and the ratio, and appends a row to --csv.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

import torch
import torch.nn.functional as F

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from kdcore.artifacts import atomic_path  # noqa: E402
from kdcore.config import load_params  # noqa: E402
from kdcore.data.prepared import load_meta  # noqa: E402
from kdcore.losses.compose import Objective  # noqa: E402
from kdcore.models import build_model  # noqa: E402
from kdcore.runtime import autocast, configure, resolve_device, seed_everything  # noqa: E402
from kdcore.training import fit, make_optimizer  # noqa: E402
from kdcore.transfer.pool import SYNTHETIC_FILE, load_view_set  # noqa: E402


def fresh_student(params, prepared, seed: int) -> torch.nn.Module:
    seed_everything(seed)
    return build_model(params.student.model, prepared.input_shape, prepared.num_classes)


def plain_epoch(model, batches, cfg, weights: dict[str, float], temperature: float, device: torch.device) -> float:
    """One epoch of the plainest loop over pre-rendered batches (copied to `device` batch by batch, under the
    autocast kdflow uses there); returns its seconds."""
    model.to(device)
    optimizer = make_optimizer(model, cfg)
    model.train()
    started = time.perf_counter()
    for x, y, teacher in batches:
        x, y, teacher = x.to(device), y.to(device), teacher.to(device)
        with autocast(device):
            logits = model(x)
            loss = weights.get("ce", 0.0) * F.cross_entropy(logits, y)
            if "kd" in weights:
                kl = F.kl_div(
                    F.log_softmax(logits / temperature, 1), F.log_softmax(teacher / temperature, 1),
                    reduction="batchmean", log_target=True,
                )  # fmt: skip
                loss = loss + weights["kd"] * kl * temperature**2
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
    synchronize(device)
    return time.perf_counter() - started


def synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--params", type=Path, default=ROOT / "params.yaml")
    parser.add_argument("--prepared", type=Path, help="prepared data (default: paths.prepared of --params)")
    parser.add_argument("--transfer", type=Path, help="build_transfer's output (default: paths.transfer)")
    parser.add_argument("--synthetic", type=Path, help="the synthesize stage's output (default: paths.synthetic)")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--label", default="digits")
    parser.add_argument("--device", default="cpu", help="cpu | cuda (params `gpu` set autocast and layout there)")
    parser.add_argument("--csv", type=Path, default=ROOT / "reports" / "epoch_time.csv")
    args = parser.parse_args(argv)
    params = load_params(args.params)
    prepared_dir = args.prepared or params.paths.prepared
    transfer_dir = args.transfer or params.paths.transfer
    synthetic = (args.synthetic or params.paths.synthetic) / SYNTHETIC_FILE
    torch.set_num_threads(1)
    device = resolve_device(args.device)
    configure(params.gpu, device)
    prepared = load_meta(prepared_dir)
    views, _ = load_view_set(transfer_dir, prepared_dir, synthetic, params.distill.topk_rest)
    terms = [t.model_dump(mode="json") for t in params.distill.terms]
    if {t["name"] for t in terms} - {"ce", "kd"}:
        raise SystemExit("epoch_time: distill.terms must be ce and kd terms (the plain loop writes those two)")
    weights = {t["name"]: t["weight"] for t in terms}
    cfg = params.student.train.model_copy(update={"epochs": 1, "schedule": "constant"})

    # the plain loop's batches: the same order fit draws for epoch 0, rendered before the clock starts
    order = torch.randperm(len(views), generator=torch.Generator().manual_seed(params.seed * 100_003))
    batches = []
    for first in range(0, len(views), cfg.batch_size):
        batch = views.batch(order[first : first + cfg.batch_size], torch.Generator())
        batches.append((batch["x"], batch["y"].clamp_min(0), batch["teacher_logits"]))

    started = time.perf_counter()
    rendered = views.render_all()  # as the distill stage does before its first epoch, when the views fit
    render_s = time.perf_counter() - started
    if rendered:
        print(f"kdflow renders the {len(views)} views once before training: {render_s:.2f} s", flush=True)
    kdflow_s, plain_s = [], []
    for repeat in range(args.repeats):
        model = fresh_student(params, prepared, params.seed)
        started = time.perf_counter()
        fit(model, views, Objective(terms, params.distill.temperature), cfg, seed=params.seed,
            device=device, desc="kdflow", workers=params.data.workers)  # fmt: skip
        synchronize(device)
        kdflow_s.append(time.perf_counter() - started)
        plain_s.append(plain_epoch(fresh_student(params, prepared, params.seed), batches, cfg, weights,
                                   params.distill.temperature, device))  # fmt: skip
        print(f"repeat {repeat}: kdflow {kdflow_s[-1]:.2f} s, plain {plain_s[-1]:.2f} s", flush=True)
    kdflow, plain = statistics.median(kdflow_s), statistics.median(plain_s)
    row = (f"{args.label},{len(views)},{params.student.model.name},{cfg.batch_size},{args.repeats},"
           f"{kdflow:.3f},{plain:.3f},{kdflow / plain:.3f},{render_s if rendered else 0:.3f}\n")  # fmt: skip
    print(f"{args.label}: {len(views)} views, one epoch: kdflow {kdflow:.2f} s, plain loop {plain:.2f} s, "
          f"ratio {kdflow / plain:.2f}x")  # fmt: skip
    header = "data,views,student,batch_size,repeats,kdflow_s,plain_s,ratio,render_once_s\n"
    old = args.csv.read_text() if args.csv.is_file() else header
    kept = [line for line in old.splitlines(keepends=True)[1:] if not line.startswith(f"{args.label},")]
    with atomic_path(args.csv) as tmp:
        tmp.write_text(header + "".join(kept) + row)
    return 0


if __name__ == "__main__":
    sys.exit(main())
