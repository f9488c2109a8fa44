"""Memory and time of one GNN training epoch as the graph grows: the whole graph per step (the default,
`data.graph.fanouts: null`) against sampled mini-batches (`fanouts: [10, 10]`, GraphSAGE's sampling).

    python benchmarks/graph_memory.py [--nodes 25000 50000 100000 200000] [--degree 20] [--features 100]
                                      [--fanouts 10 10] [--batch 1024] [--work /tmp/kdflow-graph-memory]
                                      [--out reports/graph_memory.csv]

For each size a random graph (uniform edges, made undirected; random labels over 10 classes, 10% of the
nodes labelled, 5% validation) is written once as an .npz. Each (size, mode) then runs in its own process:
it loads the graph, builds its neighbour index, and trains a 2-layer GraphSAGE (hidden 64) for one epoch with
kdcore.graph.train.train_nodes, which ends the epoch with inference on every node (layer by layer once the
graph has more than WHOLE_GRAPH_EDGES edges). Measured: the process's peak resident memory (ru_maxrss)
before training, with the graph loaded, and after the epoch; the epoch's wall time; one thread. The figure
that matters is the peak above the loaded graph: what training adds. Rows go to --out and a table to the
.md beside it.
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from kdcore.artifacts import atomic_path, write_text  # noqa: E402

HIDDEN, CLASSES = 64, 10


def make_graph(path: Path, nodes: int, degree: int, features: int, seed: int = 0) -> None:
    import torch

    from kdcore.graph.planetoid import symmetric_edges

    generator = torch.Generator().manual_seed(seed)
    pairs = torch.randint(nodes, (2, nodes * degree // 2), generator=generator).numpy()
    edges = symmetric_edges(pairs, nodes, "random graph")
    x = torch.rand(nodes, features, generator=generator).numpy()
    y = torch.randint(CLASSES, (nodes,), generator=generator).numpy()
    order = torch.randperm(nodes, generator=generator).numpy()
    train, val = np.zeros(nodes, bool), np.zeros(nodes, bool)
    train[order[: nodes // 10]], val[order[nodes // 10 : nodes // 10 + nodes // 20]] = True, True
    with atomic_path(path) as tmp, open(tmp, "wb") as f:
        np.savez(f, x=x, y=y, edge_index=edges, train_mask=train, val_mask=val)


def peak_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # Linux: kilobytes


def child(path: Path, mode: str, fanouts: list[int], batch: int) -> dict:
    """One epoch in this process; prints its figures as one JSON line."""
    from types import SimpleNamespace

    import torch

    from kdcore.graph.data import Graph
    from kdcore.graph.models import GNN
    from kdcore.graph.train import NodeTargets, train_nodes

    torch.set_num_threads(1)
    with np.load(path) as f:
        masks = {"train": torch.from_numpy(f["train_mask"]), "val": torch.from_numpy(f["val_mask"])}
        graph = Graph(torch.from_numpy(f["x"]), torch.from_numpy(f["y"]), torch.from_numpy(f["edge_index"]), masks,
                      [str(c) for c in range(CLASSES)])  # fmt: skip
    graph.neighbours  # noqa: B018  (built before the baseline: serving and sampling keep it)
    cfg = SimpleNamespace(epochs=1, lr=0.01, weight_decay=5e-4, optimizer="adam", momentum=0.9, schedule="constant",
                          batch_size=batch)  # fmt: skip

    def epoch(g: Graph) -> None:
        torch.manual_seed(0)
        model = GNN("sage", g.x.shape[1], HIDDEN, CLASSES, 2, 0.5)
        train_nodes(model, g, NodeTargets(g.masks["train"]), [{"name": "ce", "weight": 1.0}], 1.0, cfg, seed=0,
                    patience=1, log=lambda _: None, fanouts=fanouts if mode == "sampled" else None)  # fmt: skip

    # a warm-up on a small graph first: the libraries' one-time memory belongs to the baseline
    edges = torch.randint(200, (2, 2000))
    edges = torch.cat([edges, edges.flip(0)], 1)
    edges = edges[:, edges[0] != edges[1]].unique(dim=1)
    every = torch.ones(200, dtype=torch.bool)
    small = Graph(torch.rand(200, graph.x.shape[1]), torch.randint(CLASSES, (200,)), edges,
                  {"train": every, "val": every}, graph.class_names)  # fmt: skip
    epoch(small)
    loaded = peak_mb()
    started = time.perf_counter()
    epoch(graph)
    seconds = time.perf_counter() - started
    return {"nodes": graph.num_nodes, "edges": int(graph.edge_index.shape[1]), "mode": mode,
            "loaded_mb": round(loaded, 1), "peak_mb": round(peak_mb(), 1), "epoch_s": round(seconds, 2)}  # fmt: skip


def write_report(rows: pd.DataFrame, out: Path, args) -> None:
    rows = rows.assign(added_mb=rows["peak_mb"] - rows["loaded_mb"])
    lines = [
        "# GNN training memory as the graph grows",
        "",
        f"Made by `python benchmarks/graph_memory.py` (rows in `{out.name}`): random graphs of mean degree "
        f"{args.degree} and {args.features} features, a 2-layer GraphSAGE of hidden width {HIDDEN}, one training "
        "epoch on 10% of the nodes (then inference on every node), one thread, each run in its own process. "
        "`added` is the peak resident memory above the loaded graph and its neighbour index: what training "
        f"adds. Sampled: at most {args.fanouts} neighbours per hop, batches of {args.batch} nodes.",
        "",
        "| nodes | directed edges | graph loaded | whole graph: added | epoch | sampled: added | epoch | ratio |",
        "|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for nodes, part in rows.groupby("nodes"):
        whole, sampled = (part[part["mode"] == m].iloc[0] if (part["mode"] == m).any() else None
                          for m in ("whole", "sampled"))  # fmt: skip
        cells = [f"{nodes:,}", f"{int(part['edges'].iloc[0]):,}", f"{part['loaded_mb'].max():,.0f} MB"]
        for r in (whole, sampled):
            cells += ["-", "-"] if r is None else [f"{r.added_mb:,.0f} MB", f"{r.epoch_s:.1f} s"]
        ratio = whole.added_mb / sampled.added_mb if whole is not None and sampled is not None else float("nan")
        cells.append(f"{ratio:.1f}x")
        lines.append("| " + " | ".join(cells) + " |")
    write_text(out.with_suffix(".md"), "\n".join(lines) + "\n")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--nodes", type=int, nargs="+", default=[25_000, 50_000, 100_000, 200_000])
    parser.add_argument("--degree", type=int, default=20)
    parser.add_argument("--features", type=int, default=100)
    parser.add_argument("--fanouts", type=int, nargs="+", default=[10, 10])
    parser.add_argument("--batch", type=int, default=1024)
    parser.add_argument("--modes", nargs="+", default=["whole", "sampled"], choices=["whole", "sampled"])
    parser.add_argument("--work", type=Path, default=Path("/tmp/kdflow-graph-memory"))
    parser.add_argument("--out", type=Path, default=ROOT / "reports" / "graph_memory.csv")
    parser.add_argument("--child", type=Path, help=argparse.SUPPRESS)
    parser.add_argument("--mode", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.child:
        print(json.dumps(child(args.child, args.mode, args.fanouts, args.batch)))
        return 0
    args.work.mkdir(parents=True, exist_ok=True)
    rows = []
    for nodes in args.nodes:
        path = args.work / f"random_{nodes}_d{args.degree}_f{args.features}.npz"
        if not path.is_file():
            print(f"making {path.name}", flush=True)
            make_graph(path, nodes, args.degree, args.features)
        for mode in args.modes:
            command = [sys.executable, __file__, "--child", str(path), "--mode", mode, "--batch", str(args.batch),
                       "--fanouts", *map(str, args.fanouts)]  # fmt: skip
            done = subprocess.run(command, capture_output=True, text=True, check=False)
            if done.returncode != 0:
                print(f"{nodes:,} nodes, {mode}: failed: {done.stderr.strip().splitlines()[-1:]}", flush=True)
                continue
            row = json.loads(done.stdout.strip().splitlines()[-1])
            rows.append(row)
            print(f"{nodes:,} nodes, {row['edges']:,} edges, {mode}: loaded {row['loaded_mb']:,.0f} MB, peak "
                  f"{row['peak_mb']:,.0f} MB, epoch {row['epoch_s']:.1f} s", flush=True)  # fmt: skip
            table = pd.DataFrame(rows)
            with atomic_path(args.out) as tmp:
                table.to_csv(tmp, index=False)
            write_report(table, args.out, args)
    print(f"graph_memory: -> {args.out}, {args.out.with_suffix('.md')}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
