"""Graph-less distillation on a Planetoid graph (GLNN's protocol, Zhang et al. 2022): GNN teachers (GraphSAGE,
GCN), an MLP trained on the labels alone, and an MLP distilled from each teacher, in the transductive and the
inductive setting, over 10 seeds; and what classifying unseen nodes costs each of them.

    python benchmarks/graph.py --root ../shared/data/planetoid [--name Cora] [--seeds 0 1 ... 9]
                               [--choice-seeds 100 101 102] [--reports reports] [--sampled 10 10]

Split: the data's public split (Cora: 20 labelled nodes per class, 500 validation, 1,000 test). Inductive:
20% of the test nodes are held out with every edge that touches one (seeded per seed); teachers and students
train on the rest, and accuracy is reported on the held-out nodes, the GNN then seeing the whole graph.

Settings: the teachers use the common settings for these graphs (2 layers of 64, dropout 0.5, Adam at 0.01,
weight decay 5e-4, the epoch of best validation accuracy, patience 50), not tuned here. The students' width,
weight decay and the CE weight lambda of the distilled one are chosen by mean validation accuracy on
--choice-seeds, separately for each setting and teacher, and then reported on --seeds, which the choice did
not use. Latency: one thread; a GNN gathers each node's 2-hop neighbourhood from the whole graph (through its
in-neighbour index, built once) and runs on it in PyTorch; the MLP runs as its ONNX file (fp32 and int8) in
onnxruntime on the nodes' features.

Cora is small: the 2-hop neighbourhood of 1,000 nodes is most of its 2,708. `--scaling NODES FEATURES DEGREE`
(default 200,000 nodes, 100 features, mean degree 50: the shape of OGB Products, on which GLNN measured its
speed-ups) times the same models, untrained, on a random graph of that shape.

`--sampled 10 10` also trains the GraphSAGE teacher on sampled neighbourhoods (data.graph.fanouts) and reports
its accuracy beside the one trained on the whole graph.

Rows go to reports/graph.csv (dataset,setting,model,role,seed,accuracy,latency_ms,latency_ms_b1), latency_ms
at a batch of 1,000 unseen nodes; reports/graph.md is made from them (`--report-only` remakes it).
"""

from __future__ import annotations

import argparse
import itertools
import json
import sys
import tempfile
import time
from pathlib import Path
from types import SimpleNamespace

import pandas as pd
import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from kdcore.artifacts import atomic_path  # noqa: E402

TEACHER = {"hidden": 64, "layers": 2, "dropout": 0.5, "lr": 0.01, "weight_decay": 5e-4}
EPOCHS, PATIENCE = 500, 50
GRID = {"hidden": [128, 256], "weight_decay": [0.0, 5e-4], "ce": [0.0, 0.2]}  # ce: lambda; scratch uses ce only
STUDENT_DROPOUT, TEMPERATURE, BATCH = 0.5, 1.0, 4096
COLUMNS = ["dataset", "setting", "model", "role", "seed", "accuracy", "latency_ms", "latency_ms_b1"]
THREADS, REPEATS = 1, 30


def train_cfg(lr: float, weight_decay: float) -> SimpleNamespace:
    return SimpleNamespace(epochs=EPOCHS, lr=lr, weight_decay=weight_decay, optimizer="adam", momentum=0.9,
                           schedule="constant", batch_size=BATCH)  # fmt: skip


def load(root: Path, name: str, setting: str, seed: int):
    from kdcore.graph.data import build_graph
    from kdcore.graph.planetoid import read_planetoid

    return build_graph(read_planetoid(root, name), None, split="public", setting=setting, seed=seed)


def eval_mask(graph, setting: str) -> torch.Tensor:
    return graph.masks["test"] & graph.masks["held_out"] if setting == "inductive" else graph.masks["test"]


def teacher_run(graph, kind: str, seed: int, fanouts: list[int] | None = None):
    """The teacher trained on the observed graph (on sampled neighbourhoods with `fanouts`); its logits there (the
    soft labels) and on the whole graph."""
    from kdcore.graph.models import GNN
    from kdcore.graph.train import NodeTargets, node_logits, train_nodes

    observed, ids = graph.observed()
    torch.manual_seed(seed)
    model = GNN(kind, graph.x.shape[1], TEACHER["hidden"], graph.num_classes, TEACHER["layers"], TEACHER["dropout"])
    model, _ = train_nodes(model, observed, NodeTargets(observed.masks["train"]), [{"name": "ce", "weight": 1.0}],
                           TEMPERATURE, train_cfg(TEACHER["lr"], TEACHER["weight_decay"]), seed=seed,
                           patience=PATIENCE, desc=f"{kind} seed {seed}", log=lambda _: None,
                           fanouts=fanouts)  # fmt: skip
    return model, observed, node_logits(model, observed), node_logits(model, graph)


def student_run(observed, soft_logits, seed: int, hidden: int, weight_decay: float, ce: float | None):
    """An MLP on node features: on the labels alone (ce None) or distilled, lambda = ce on the labelled nodes
    and 1 - lambda of KD on the transfer nodes (every node of the training graph the teacher was not trained
    on)."""
    from kdcore.graph.train import NodeTargets, train_nodes
    from kdcore.models.builtin import MLP

    torch.manual_seed(seed)
    model = MLP(observed.x.shape[1], [hidden], observed.num_classes, STUDENT_DROPOUT)
    train = observed.masks["train"]
    if ce is None:
        targets, terms = NodeTargets(train), [{"name": "ce", "weight": 1.0}]
    else:
        targets = NodeTargets(train, ~train, soft_logits)
        terms = ([{"name": "ce", "weight": ce}] if ce else []) + [{"name": "kd", "weight": 1.0 - ce}]
    model, _ = train_nodes(model, observed, targets, terms, TEMPERATURE, train_cfg(0.01, weight_decay), seed=seed,
                           patience=PATIENCE, desc="mlp", log=lambda _: None)  # fmt: skip
    return model


def sampled_accuracy(graph, setting: str, seed: int, fanouts: list[int]) -> float:
    """Test accuracy of a GraphSAGE teacher trained on sampled neighbourhoods (its latency is the GNN's)."""
    from kdcore.graph.train import accuracy

    whole = teacher_run(graph, "sage", seed, fanouts)[3]
    return accuracy(whole, graph.y, eval_mask(graph, setting))


def choose(root: Path, name: str, setting: str, seeds: list[int], log) -> dict[str, dict]:
    """Each student's settings, by mean validation accuracy over `seeds`."""
    from kdcore.graph.train import accuracy, node_logits

    scores: dict[tuple, list[float]] = {}
    for seed in seeds:
        graph = load(root, name, setting, seed)
        observed, _ = graph.observed()
        val = observed.masks["val"]
        teachers = {kind: teacher_run(graph, kind, seed)[2] for kind in ("sage", "gcn")}
        for hidden, wd in itertools.product(GRID["hidden"], GRID["weight_decay"]):
            model = student_run(observed, None, seed, hidden, wd, None)
            scores.setdefault(("scratch", hidden, wd, None), []).append(accuracy(node_logits(model, observed),
                                                                                 observed.y, val))  # fmt: skip
            for kind, soft in teachers.items():
                for ce in GRID["ce"]:
                    model = student_run(observed, soft, seed, hidden, wd, ce)
                    scores.setdefault((f"mlp<-{kind}", hidden, wd, ce), []).append(
                        accuracy(node_logits(model, observed), observed.y, val)
                    )
    chosen = {}
    for role in ("scratch", "mlp<-sage", "mlp<-gcn"):
        best = max((k for k in scores if k[0] == role), key=lambda k: (sum(scores[k]) / len(scores[k]), -k[1]))
        chosen[role] = {"hidden": best[1], "weight_decay": best[2], "ce": best[3],
                        "val_accuracy": round(sum(scores[best]) / len(scores[best]), 4)}  # fmt: skip
        log(f"{setting}: {role}: {chosen[role]}")
    return chosen


def onnx_files(model, features: int, calibration: torch.Tensor, out: Path) -> dict[str, Path]:
    from kdcore.quantize.onnx_export import export_onnx, quantize_int8

    export_onnx(model, (features, 1, 1), out / "mlp.onnx")
    quantize_int8(out / "mlp.onnx", out / "mlp_int8.onnx", calibration, True, True)
    return {"fp32": out / "mlp.onnx", "int8": out / "mlp_int8.onnx"}


def measure_seed(root: Path, name: str, setting: str, seed: int, chosen: dict, log) -> list[dict]:
    from kdcore.graph.serve import NeighbourIndex, features_latency_ms, gnn_latency_ms
    from kdcore.graph.train import accuracy, node_logits
    from kdcore.models.onnx import OnnxModel

    graph = load(root, name, setting, seed)
    test = eval_mask(graph, setting)
    unseen = torch.nonzero(test).flatten()
    batch = unseen[torch.randperm(len(unseen), generator=torch.Generator().manual_seed(seed))[:1000]]
    if len(batch) < 1000:  # fewer test nodes than the batch: the batch repeats them, as a server's would
        batch = batch[torch.arange(1000) % len(batch)]
    one = batch[:1]
    index = NeighbourIndex(graph.edge_index, graph.num_nodes)
    rows = []

    def row(model_name: str, role: str, acc: float, b1000: float, b1: float) -> None:
        values = [name, setting, model_name, role, seed, round(acc, 4), round(b1000, 4), round(b1, 4)]
        rows.append(dict(zip(COLUMNS, values, strict=True)))

    for kind in ("sage", "gcn"):
        model, observed, soft, whole = teacher_run(graph, kind, seed)
        row(
            kind,
            "teacher",
            accuracy(whole, graph.y, test),
            gnn_latency_ms(model, graph, batch, REPEATS, THREADS, index),
            gnn_latency_ms(model, graph, one, REPEATS, THREADS, index),
        )
        c = chosen[f"mlp<-{kind}"]
        student = student_run(observed, soft, seed, c["hidden"], c["weight_decay"], c["ce"])
        with tempfile.TemporaryDirectory(prefix="kdflow-graph-") as tmp:
            calibration = observed.x[:512].reshape(-1, graph.x.shape[1], 1, 1)
            files = onnx_files(student, graph.x.shape[1], calibration, Path(tmp))
            torch.set_num_threads(THREADS)
            for runtime, path in files.items():
                shipped = OnnxModel(path)
                logits = shipped(graph.x.reshape(graph.num_nodes, -1, 1, 1))
                row(f"mlp<-{kind}" + ("" if runtime == "fp32" else " int8"), "distilled",
                    accuracy(logits, graph.y, test), features_latency_ms(shipped, graph, batch, REPEATS, THREADS),
                    features_latency_ms(shipped, graph, one, REPEATS, THREADS))  # fmt: skip
        log(f"{setting} seed {seed}: {kind} {rows[-3]['accuracy']:.4f}, distilled MLP {rows[-2]['accuracy']:.4f}")
    c = chosen["scratch"]
    observed, _ = graph.observed()
    scratch = student_run(observed, None, seed, c["hidden"], c["weight_decay"], None)
    row("mlp", "scratch", accuracy(node_logits(scratch, graph), graph.y, test), float("nan"), float("nan"))
    log(f"{setting} seed {seed}: scratch MLP {rows[-1]['accuracy']:.4f}")
    return rows


def latency_row(dataset: str, model: str, role: str, seed: int, b1000: float, b1: float) -> dict:
    values = [dataset, "latency only", model, role, seed, float("nan"), round(b1000, 4), round(b1, 4)]
    return dict(zip(COLUMNS, values, strict=True))


def scaling_rows(nodes: int, features: int, degree: int, seed: int, hidden: int, log) -> tuple[list[dict], dict]:
    """Latency alone on a random graph of `nodes` nodes with `features` features and mean degree `degree`
    (the shape of a larger graph than the benchmark's): untrained models, as latency does not depend on the
    weights. The MLP is as wide as the distilled students chosen on the real graph. Also returns the graph's
    shape and how many nodes the GNNs gather for each batch."""
    from kdcore.graph.data import Graph
    from kdcore.graph.models import GNN
    from kdcore.graph.planetoid import symmetric_edges
    from kdcore.graph.serve import NeighbourIndex, features_latency_ms, gnn_latency_ms
    from kdcore.models.builtin import MLP
    from kdcore.models.onnx import OnnxModel

    generator = torch.Generator().manual_seed(seed)
    pairs = torch.randint(nodes, (2, nodes * degree // 2), generator=generator).numpy()
    edges = torch.from_numpy(symmetric_edges(pairs, nodes, "random graph"))
    graph = Graph(torch.randn(nodes, features, generator=generator), torch.zeros(nodes, dtype=torch.int64), edges,
                  {}, [str(c) for c in range(10)])  # fmt: skip
    batch = torch.randperm(nodes, generator=generator)[:1000]
    one = batch[:1]
    index = NeighbourIndex(edges, nodes)
    name = f"random {nodes:,} nodes, degree {edges.shape[1] / nodes:.0f}, {features} features"
    info = {"dataset": name, "nodes": nodes, "edges": int(edges.shape[1]), "features": features, "hidden": hidden,
            "gathered_1000": len(index.neighbourhood(batch, TEACHER["layers"])[0]),
            "gathered_1": len(index.neighbourhood(one, TEACHER["layers"])[0])}  # fmt: skip
    log(f"{name}: a 2-hop neighbourhood holds {info['gathered_1000']:,} nodes for 1,000, {info['gathered_1']:,} for 1")
    rows = []
    for kind in ("sage", "gcn"):
        model = GNN(kind, features, TEACHER["hidden"], 10, TEACHER["layers"], 0.0)
        times = [gnn_latency_ms(model, graph, nodes_, REPEATS, THREADS, index) for nodes_ in (batch, one)]
        rows.append(latency_row(name, kind, "teacher", seed, *times))
        log(f"{name}: {kind} {rows[-1]['latency_ms']:.2f} ms for 1,000 nodes")
    with tempfile.TemporaryDirectory(prefix="kdflow-graph-") as tmp:
        mlp = MLP(features, [hidden], 10)
        files = onnx_files(mlp, features, graph.x[:512].reshape(-1, features, 1, 1), Path(tmp))
        torch.set_num_threads(THREADS)
        for runtime, path in files.items():
            shipped = OnnxModel(path)
            label = "mlp" + ("" if runtime == "fp32" else " int8")
            times = [features_latency_ms(shipped, graph, nodes_, REPEATS, THREADS) for nodes_ in (batch, one)]
            rows.append(latency_row(name, label, "student", seed, *times))
            log(f"{name}: {label} {rows[-1]['latency_ms']:.3f} ms for 1,000 nodes")
    return rows, info


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--root", type=Path, help="the Planetoid root (holding <Name>/raw/ind.<name>.*)")
    parser.add_argument("--name", default="Cora")
    parser.add_argument("--seeds", type=int, nargs="+", default=list(range(10)))
    parser.add_argument("--choice-seeds", type=int, nargs="+", default=[100, 101, 102])
    parser.add_argument("--settings", nargs="+", default=["transductive", "inductive"])
    parser.add_argument("--reports", type=Path, default=ROOT / "reports")
    parser.add_argument("--report-only", action="store_true")
    parser.add_argument("--sampled", type=int, nargs="+", metavar="FANOUT",
                        help="also GraphSAGE trained on sampled neighbourhoods, FANOUT per hop")  # fmt: skip
    parser.add_argument("--scaling", type=int, nargs=3, metavar=("NODES", "FEATURES", "DEGREE"),
                        default=[200_000, 100, 50],
                        help="latency alone on a random graph of this shape (0 0 0: none)")  # fmt: skip
    args = parser.parse_args(argv)
    if set(args.seeds) & set(args.choice_seeds):
        parser.error("--seeds and --choice-seeds must not overlap: settings are chosen on seeds not reported")
    csv, meta_path = args.reports / "graph.csv", args.reports / "graph_meta.json"
    if not args.report_only:
        if args.root is None:
            parser.error("--root is required (the Planetoid root directory)")
        torch.set_num_threads(THREADS)
        rows = pd.read_csv(csv).to_dict("records") if csv.is_file() else []
        meta = json.loads(meta_path.read_text()) if meta_path.is_file() else {}
        for setting in args.settings:
            key = f"{args.name}/{setting}"
            if key not in meta:
                started = time.perf_counter()
                meta[key] = {"chosen": choose(args.root, args.name, setting, args.choice_seeds, print),
                             "choice_seeds": args.choice_seeds, "choice_seconds": 0.0}  # fmt: skip
                meta[key]["choice_seconds"] = round(time.perf_counter() - started, 1)
                with atomic_path(meta_path) as tmp:
                    tmp.write_text(json.dumps(meta, indent=1, sort_keys=True) + "\n")
            done = {(r["setting"], r["seed"]) for r in rows if r["dataset"] == args.name}
            for seed in args.seeds:
                if (setting, seed) in done:
                    continue
                rows += measure_seed(args.root, args.name, setting, seed, meta[key]["chosen"], print)
                with atomic_path(csv) as tmp:
                    pd.DataFrame(rows, columns=COLUMNS).to_csv(tmp, index=False)
        for setting in args.settings if args.sampled else []:
            label = f"sage sampled {'-'.join(map(str, args.sampled))}"
            done = {r["seed"] for r in rows if (r["dataset"], r["setting"], r["model"]) == (args.name, setting, label)}
            for seed in (s for s in args.seeds if s not in done):
                graph = load(args.root, args.name, setting, seed)
                accuracy = sampled_accuracy(graph, setting, seed, args.sampled)
                rows.append(dict(zip(COLUMNS, [args.name, setting, label, "teacher", seed, round(accuracy, 4),
                                               float("nan"), float("nan")], strict=True)))  # fmt: skip
                print(f"{setting} seed {seed}: {label} {accuracy:.4f}")
                with atomic_path(csv) as tmp:
                    pd.DataFrame(rows, columns=COLUMNS).to_csv(tmp, index=False)
        nodes, features, degree = args.scaling
        if nodes and not any(r["setting"] == "latency only" for r in rows):
            widths = [
                c["hidden"]
                for m in meta.values()
                if "chosen" in m
                for role, c in m["chosen"].items()
                if role != "scratch"
            ]
            new, meta["scaling"] = scaling_rows(nodes, features, degree, 0, max(widths, default=256), print)
            with atomic_path(meta_path) as tmp:
                tmp.write_text(json.dumps(meta, indent=1, sort_keys=True) + "\n")
            with atomic_path(csv) as tmp:
                pd.DataFrame(rows + new, columns=COLUMNS).to_csv(tmp, index=False)
    from benchmarks.graph_report import write_report

    write_report(args.reports)
    return 0


if __name__ == "__main__":
    sys.exit(main())
