"""Training and inference on a graph's nodes, for GNNs (by default the whole graph per step, as GCN, GraphSAGE
and GAT are trained on citation graphs; with `fanouts`, mini-batches of nodes with sampled neighbourhoods, as
GraphSAGE is trained on large graphs) and for MLPs on node features (mini-batches of nodes, no edges).
Inference on a graph of more than WHOLE_GRAPH_EDGES edges runs a GNN one layer at a time over chunks of nodes.

A run trains on `labelled` nodes with the objective's `ce` terms and on `soft` nodes (the transfer nodes,
whose teacher logits are given) with its other terms, each averaged over its own nodes: GLNN's
`lambda * CE(labelled) + (1 - lambda) * KD(transfer)` (Zhang et al. 2022, eq. 1) with lambda and
1 - lambda as the two terms' weights. The model kept is the one of the epoch with the best validation
accuracy (ties: the earlier), and training stops after `patience` epochs without a better one, as is
usual on these graphs: both use the validation nodes only.
"""

from __future__ import annotations

import copy
import time
from dataclasses import dataclass

import torch
from torch import nn

from kdcore.graph.data import Graph
from kdcore.graph.models import needs_edges
from kdcore.runtime import seed_everything

WHOLE_GRAPH_EDGES = 1_000_000  # above this, inference goes layer by layer (memory: a chunk's edges)


@dataclass
class NodeTargets:
    labelled: torch.Tensor  # (N,) bool: nodes whose label trains the model (ce terms)
    soft: torch.Tensor | None = None  # (N,) bool: nodes whose teacher logits train it (the other terms)
    teacher_logits: torch.Tensor | None = None  # (N, classes), rows of `soft` used


@torch.no_grad()
def node_logits(model: nn.Module, graph: Graph, batch_size: int = 8192) -> torch.Tensor:
    """(N, classes) logits of every node, in eval mode on the CPU."""
    was = model.training
    model.eval()
    if needs_edges(model) and graph.edge_index.shape[1] > WHOLE_GRAPH_EDGES:
        out = model.layerwise(graph.x, graph.neighbours, batch_size)
    elif needs_edges(model):
        out = model(graph.x, graph.edge_index)
    else:
        out = torch.cat([model(graph.x[i : i + batch_size]) for i in range(0, graph.num_nodes, batch_size)])
    model.train(was)
    return out.float()


def accuracy(logits: torch.Tensor, y: torch.Tensor, mask: torch.Tensor) -> float:
    if not bool(mask.any()):
        return float("nan")
    return float((logits[mask].argmax(1) == y[mask]).float().mean())


def _optimizer(model: nn.Module, cfg) -> torch.optim.Optimizer:
    if cfg.optimizer == "sgd":
        return torch.optim.SGD(model.parameters(), lr=cfg.lr, momentum=cfg.momentum, weight_decay=cfg.weight_decay)
    kind = torch.optim.AdamW if cfg.optimizer == "adamw" else torch.optim.Adam
    return kind(model.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)


def split_terms(terms: list[dict], temperature: float):
    """The objective's `ce` terms and its other terms, as two objectives (either may be None)."""
    from kdcore.losses.compose import Objective

    hard = [t for t in terms if t["name"] == "ce"]
    soft = [t for t in terms if t["name"] != "ce"]
    return (Objective(hard, temperature) if hard else None, Objective(soft, temperature) if soft else None)


def train_nodes(
    model: nn.Module,
    graph: Graph,
    targets: NodeTargets,
    terms: list[dict],
    temperature: float,
    cfg,
    *,
    seed: int,
    patience: int,
    desc: str = "train",
    log=print,
    fanouts: list[int] | None = None,
) -> tuple[nn.Module, list[dict[str, float]]]:
    """Trains `model` for up to cfg.epochs (a kdcore TrainConfig) and returns it at its best validation epoch,
    with one record per epoch: epoch, loss, train and validation accuracy, seconds. With `fanouts` (one per
    layer) a GNN trains on mini-batches of cfg.batch_size nodes, each on its sampled neighbourhood (at most
    fanouts[h] edges into each node reached at hop h), normalised within the sample as PyG's loaders are."""
    seed_everything(seed)
    hard, soft = split_terms(terms, temperature)
    if soft is not None and (targets.soft is None or targets.teacher_logits is None):
        raise ValueError(f"{desc}: the objective has soft terms but no teacher logits were given")
    labelled = targets.labelled if hard is not None else torch.zeros_like(targets.labelled)
    soft_nodes = targets.soft if soft is not None else torch.zeros_like(targets.labelled)
    nodes = torch.nonzero(labelled | soft_nodes).flatten()
    if len(nodes) == 0:
        raise ValueError(f"{desc}: no node to train on")
    y_hard = torch.where(labelled, graph.y, torch.full_like(graph.y, -1))
    teacher = targets.teacher_logits
    optimizer = _optimizer(model, cfg)
    whole_graph = needs_edges(model) and not fanouts
    if needs_edges(model) and fanouts and len(fanouts) != len(model.convs):
        raise ValueError(f"{desc}: {len(fanouts)} fanouts for a GNN of {len(model.convs)} layers; give one per layer")
    steps_per_epoch = 1 if whole_graph else -(-len(nodes) // cfg.batch_size)
    total_steps = steps_per_epoch * cfg.epochs
    schedule = (
        torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, total_steps)
        if cfg.schedule == "cosine"
        else torch.optim.lr_scheduler.LambdaLR(optimizer, lambda _: 1.0)
    )
    generator = torch.Generator().manual_seed(seed)
    val = graph.mask("val")
    best, best_state, since, history = -1.0, None, 0, []
    for epoch in range(1, cfg.epochs + 1):
        started = time.perf_counter()
        model.train()
        if whole_graph:
            batches = [None]
        else:
            order = nodes[torch.randperm(len(nodes), generator=generator)]
            batches = list(order.split(cfg.batch_size))
        losses = []
        for batch in batches:
            if batch is None:
                logits, rows = model(graph.x, graph.edge_index), torch.arange(graph.num_nodes)
            elif needs_edges(model):
                subset, edges, at = graph.neighbours.neighbourhood(batch, len(fanouts), fanouts, generator)
                logits, rows = model(graph.x[subset], edges)[at], batch
            else:
                logits, rows = model(graph.x[batch]), batch
            loss = logits.new_zeros(())
            if hard is not None:
                pick = labelled[rows]
                if bool(pick.any()):
                    loss = loss + hard(logits[pick], {"y": y_hard[rows][pick]}).total
            if soft is not None:
                pick = soft_nodes[rows]
                if bool(pick.any()):
                    part = {"teacher_logits": teacher[rows][pick], "y": torch.full((int(pick.sum()),), -1)}
                    loss = loss + soft(logits[pick], part).total
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            schedule.step()
            losses.append(float(loss.detach()))
        logits = node_logits(model, graph)
        record = {
            "epoch": epoch,
            "loss": sum(losses) / len(losses),
            "train/accuracy": accuracy(logits, graph.y, targets.labelled),
            "val/accuracy": accuracy(logits, graph.y, val),
            "seconds": time.perf_counter() - started,
        }
        history.append(record)
        score = record["val/accuracy"] if bool(val.any()) else -record["loss"]
        if score > best:
            best, best_state, since = score, copy.deepcopy(model.state_dict()), 0
        else:
            since += 1
        if since >= patience:
            log(f"{desc}: no better validation accuracy for {patience} epochs; stopped after epoch {epoch}")
            break
    model.load_state_dict(best_state)
    model.eval()
    return model, history
