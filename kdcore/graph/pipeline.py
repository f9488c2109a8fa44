"""The graph side of the pipeline's stages (data.source planetoid or graph_npz), as functions of explicit
arguments; each stage module calls them with what params.yaml says and writes the outputs dvc.yaml declares.

- prepare: the graph read (the Planetoid pickles through the restricted unpickler, or the user's .npz), its
  nodes split, checked with Great Expectations, written as `graph.safetensors` with `meta.json` and one
  directory per split naming its nodes (teacher_train: the labelled training nodes; validation; test: the nodes
  accuracy is reported on, in the inductive setting the held-out ones; transfer: the nodes students learn from);
- train_teacher@<name>: a GNN (or an MLP) on the training graph, CE on the labelled nodes, the epoch of best
  validation accuracy;
- build_transfer: the teachers' logits on the training graph (several teachers combined as for images);
- distill: the student (an MLP on node features, or a GNN) with distill.terms: `ce` on the labelled nodes,
  `kd` on the transfer nodes (every node of the training graph the teacher was not trained on);
- train_student_scratch: the same student on the labelled nodes alone.
Export and evaluation: kdcore/graph/deploy.py.
"""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import torch

from kdcore.artifacts import (
    atomic_dir,
    load_tensors,
    read_json,
    replaced_together,
    save_tensors,
    sha256_file,
    write_json,
)
from kdcore.checkpoint import save_model_dir
from kdcore.data.validate import validate_or_fail
from kdcore.errors import DataError
from kdcore.evaluate.measured import write_training_time
from kdcore.graph.data import Graph, build_graph, read_npz_graph
from kdcore.graph.prepared import GRAPH_FILE, graph_tables, load_graph, save_graph
from kdcore.graph.train import NodeTargets, accuracy, node_logits, train_nodes
from kdcore.models import build_model, count_params
from kdcore.runtime import seed_everything

SOFT_FILE = "graph_soft.safetensors"
POOL_FILE = "pool.safetensors"  # the transfer nodes, under the name build_transfer's pool has for images
CE = [{"name": "ce", "weight": 1.0}]


def eval_mask(graph: Graph) -> torch.Tensor:
    """The nodes accuracy is reported on: the test nodes; in the inductive setting the held-out ones."""
    held = graph.mask("held_out")
    return graph.mask("test") & held if bool(held.any()) else graph.mask("test")


def transfer_mask(observed: Graph) -> torch.Tensor:
    """Every node of the training graph the teacher was not trained on."""
    return ~observed.mask("train")


def input_shape(graph: Graph) -> tuple[int, int, int]:
    return (int(graph.x.shape[1]), 1, 1)


def read_graph(source: str, path: Path, name: str | None, cfg, seed: int) -> Graph:
    """The graph `source` names (planetoid: the root and dataset name; graph_npz: the file), split and checked
    as `cfg` (a GraphDataConfig) says; one line on a defect."""
    if source == "planetoid":
        from kdcore.graph.planetoid import read_planetoid

        arrays, where = read_planetoid(path, name), f"{path} ({name})"
    else:
        arrays, where = read_npz_graph(path), str(path)
    return build_graph(
        arrays, None, split=cfg.split, setting=cfg.setting, seed=seed, train_per_class=cfg.train_per_class,
        validation=cfg.validation, test=cfg.test, held_out=cfg.held_out, normalize_features=cfg.normalize_features,
        source=where,
    )  # fmt: skip


def write_prepared(graph: Graph, out: Path, report: Path, about: dict) -> dict:
    """Checks `graph`, then replaces `out` with it, its splits' nodes and meta.json (`about` added to it)."""
    outcomes = validate_or_fail(graph_tables(graph), "prepare", report)  # before the prepared data is replaced
    observed, ids = graph.observed()
    nodes = {
        "teacher_train": torch.nonzero(graph.mask("train")).flatten(),
        "validation": torch.nonzero(graph.mask("val")).flatten(),
        "test": torch.nonzero(eval_mask(graph)).flatten(),
        "transfer": ids[transfer_mask(observed)],
    }
    with atomic_dir(out) as tmp:
        save_graph(tmp / GRAPH_FILE, graph)
        for split, index in nodes.items():
            save_tensors(tmp / split / "nodes.safetensors", {"nodes": index.contiguous()})
        sizes = {"nodes": graph.num_nodes, "edges": int(graph.edge_index.shape[1]),
                 **{k: len(v) for k, v in nodes.items()}, "held_out": int(graph.mask("held_out").sum())}  # fmt: skip
        meta = {"kind": "graph", **about, "input_shape": list(input_shape(graph)), "num_classes": graph.num_classes,
                "class_names": graph.class_names, "sizes": sizes, "sha256": sha256_file(tmp / GRAPH_FILE)}  # fmt: skip
        write_json(tmp / "meta.json", meta)
    print(
        f"prepare: {sizes['nodes']:,} nodes, {sizes['edges']:,} directed edges, {graph.num_classes} classes, "
        f"{graph.x.shape[1]} features; {about.get('setting')}: {sizes['teacher_train']} labelled, "
        f"{sizes['validation']} validation, {sizes['test']} test, {sizes['transfer']} transfer nodes; "
        f"{len(outcomes)} checks passed -> {out}"
    )
    return meta


def prepared_graph(prepared: Path) -> tuple[Graph, dict]:
    meta = read_json(Path(prepared) / "meta.json")
    if meta.get("kind") != "graph":
        raise DataError(f"{prepared}: prepared from image data; rerun prepare for a graph data.source")
    return load_graph(Path(prepared) / GRAPH_FILE), meta


def log_history(live_dir: Path, history: list[dict[str, float]]) -> None:
    """The per-epoch records as dvclive logs (seconds apart: they go to metrics/timings/)."""
    from dvclive import Live

    live = Live(dir=str(live_dir), save_dvc_exp=False, dvcyaml=None, report=None)
    for record in history:
        for name, value in record.items():
            if name not in ("epoch", "seconds"):
                live.log_metric(name, value)
        live.next_step()
    live.end()


def train_on_graph(
    spec, train_cfg, graph: Graph, targets: NodeTargets, terms, temperature: float, seed: int, patience: int, desc: str,
    fanouts: list[int] | None = None,
):  # fmt: skip
    """A fresh model of `spec` trained on the training graph (the graph's `observed()` part): model, history.
    `fanouts`: a GNN trains on sampled mini-batches (kdcore.graph.train.train_nodes)."""
    observed, _ = graph.observed()
    seed_everything(seed)
    model = build_model(spec, input_shape(graph), graph.num_classes)
    return train_nodes(model, observed, targets, terms, temperature, train_cfg, seed=seed, patience=patience,
                       desc=desc, fanouts=fanouts)  # fmt: skip


def train_and_save(
    graph: Graph,
    spec,
    train_cfg,
    targets: NodeTargets,
    terms,
    temperature: float,
    *,
    seed: int,
    patience: int,
    fanouts: list[int] | None = None,
    key: str,
    model_out: Path,
    live_out: Path,
    metrics: Path,
    config: dict,
) -> None:
    """Trains a model (a teacher or a student) and writes it, its dvclive logs and its training time."""
    with replaced_together(model_out, live_out) as (model_dir, live_dir):
        model, history = train_on_graph(spec, train_cfg, graph, targets, terms, temperature, seed, patience, key,
                                        fanouts)  # fmt: skip
        log_history(live_dir, history)
        write_training_time(metrics, key, [history])
        save_model_dir(model_dir, model, spec, input_shape(graph), graph.num_classes, seed=seed,
                       config={**config, "epochs": len(history)})  # fmt: skip
    val = accuracy(node_logits(model, graph), graph.y, graph.mask("val"))
    print(f"{key}: {spec.name}, {count_params(model):,} parameters, {int(graph.mask('train').sum())} labelled "
          f"nodes, best validation accuracy {val:.4f} after {len(history)} epochs -> {model_out}")  # fmt: skip


def labelled_targets(graph: Graph) -> NodeTargets:
    return NodeTargets(graph.observed()[0].mask("train"))


def distill_targets(graph: Graph, transfer: Path) -> NodeTargets:
    """CE on the labelled nodes, the soft terms on the transfer nodes (build_transfer's soft labels)."""
    soft = load_soft(transfer)
    return NodeTargets(graph.observed()[0].mask("train"), soft["transfer"].bool(), soft["teacher_logits"])


def load_soft(transfer: Path) -> dict[str, torch.Tensor]:
    path = Path(transfer) / SOFT_FILE
    if not path.is_file():
        raise DataError(f"{path}: missing; run build_transfer first")
    return load_tensors(path)


def write_soft_labels(graph: Graph, teachers: dict, ensemble, out: Path, report: Path) -> None:
    """The teachers' (name -> model) logits on the training graph, combined as `ensemble` (an EnsembleConfig)
    says, checked, and written with the transfer nodes."""
    from kdcore.transfer.ensemble import combine_logits

    observed, ids = graph.observed()
    logits = {name: node_logits(model, observed) for name, model in teachers.items()}
    stacked = torch.stack(list(logits.values()))
    soft = stacked[0] if len(logits) == 1 else combine_logits(stacked, ensemble.method, ensemble.weights, ensemble.tau)
    transfer = transfer_mask(observed)
    probs = soft.softmax(1)
    table = pd.DataFrame({"finite": torch.isfinite(soft).all(1).numpy(), "top": probs.max(1).values.numpy(),
                          "sum": probs.sum(1).numpy()})  # fmt: skip
    checks = [("ExpectColumnValuesToBeInSet", {"column": "finite", "value_set": [True]}),
              ("ExpectColumnValuesToBeBetween", {"column": "top", "min_value": 0.0, "max_value": 1.0}),
              ("ExpectColumnValuesToBeBetween", {"column": "sum", "min_value": 0.999, "max_value": 1.001})]  # fmt: skip
    validate_or_fail({"soft_labels": (table, checks)}, "build_transfer", report)
    agreement = {name: round(accuracy(lg, soft.argmax(1), transfer), 6) for name, lg in logits.items()}
    with atomic_dir(out) as tmp:
        save_tensors(tmp / SOFT_FILE, {"teacher_logits": soft.contiguous(), "ids": ids.contiguous(),
                                       "transfer": transfer.to(torch.uint8).contiguous()})  # fmt: skip
        save_tensors(tmp / POOL_FILE, {"nodes": ids[transfer].contiguous()})
        write_json(tmp / "summary.json", {"kind": "graph", "teachers": list(teachers), "ensemble": ensemble.method,
                                          "transfer_nodes": int(transfer.sum()),
                                          "training_graph_nodes": observed.num_nodes,
                                          "teacher_agreement_with_soft_labels": agreement})  # fmt: skip
    print(f"build_transfer: soft labels of {', '.join(teachers)} on {int(transfer.sum())} transfer nodes of the "
          f"{observed.num_nodes}-node training graph -> {out}")  # fmt: skip
