"""What classifying unseen nodes costs where each model ships, measured as GLNN does (Zhang et al. 2022,
section 5.4): a GNN must first gather each node's k-hop neighbourhood (k = its number of layers) from the
graph and run on that subgraph, as a server would have to; an MLP reads the nodes' own features only.
The gathering reads a NeighbourIndex (kdcore/graph/neighbours.py: each node's in-neighbours, stored once per
graph as a server keeps its adjacency), so it costs what the neighbourhood holds, not what the graph holds.
The GNN runs in PyTorch, the MLP as its ONNX file in onnxruntime; both on `threads` threads, the median of
`repeats` calls after a warm-up, and the lowest of ROUNDS such medians (noise only adds time). A slow call (a
large graph's whole neighbourhood) is timed fewer times: warm-up, repeats and rounds each stop once they have
taken BUDGET_S seconds, after at least one warm-up, MIN_REPEATS timed calls and one round."""

from __future__ import annotations

import statistics
import time

import torch
from torch import nn

from kdcore.graph.data import Graph
from kdcore.graph.neighbours import NeighbourIndex

ROUNDS = 3
BUDGET_S, MIN_REPEATS = 20.0, 5


def gnn_predict(model: nn.Module, graph: Graph, index: NeighbourIndex, nodes: torch.Tensor) -> torch.Tensor:
    """Logits of `nodes` from their neighbourhood, gathered through `index`: the logits the model gives on the
    whole graph (a GCN normalises with the whole graph's degrees, which the index keeps)."""
    subset, edges, mapping = index.neighbourhood(nodes, len(model.convs))
    return model(graph.x[subset], edges, index.in_degree[subset])[mapping]


def neighbourhood_size(graph: Graph, nodes: torch.Tensor, hops: int) -> int:
    """How many nodes a GNN of `hops` layers must gather to classify `nodes`."""
    return len(NeighbourIndex(graph.edge_index, graph.num_nodes).neighbourhood(nodes, hops)[0])


def _median_ms(call, repeats: int, warmup: int = 3) -> float:
    started = time.perf_counter()
    for _ in range(warmup):
        call()
        if time.perf_counter() - started > BUDGET_S / 4:
            break
    times: list[float] = []
    started = time.perf_counter()
    while len(times) < repeats and (len(times) < MIN_REPEATS or time.perf_counter() - started < BUDGET_S):
        start = time.perf_counter()
        call()
        times.append((time.perf_counter() - start) * 1e3)
    return statistics.median(times)


def _steady(call, repeats: int, threads: int) -> float:
    previous = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        with torch.inference_mode():
            started, medians = time.perf_counter(), []
            while len(medians) < ROUNDS and (not medians or time.perf_counter() - started < BUDGET_S):
                medians.append(_median_ms(call, repeats))
            return min(medians)
    finally:
        torch.set_num_threads(previous)


def gnn_latency_ms(model: nn.Module, graph: Graph, nodes: torch.Tensor, repeats: int, threads: int,
                   index: NeighbourIndex | None = None) -> float:  # fmt: skip
    """Milliseconds to classify `nodes` with a GNN: neighbourhood gathering plus the forward pass. `index` is
    the graph's NeighbourIndex, built here (untimed, as a server builds it once) when not given."""
    model = model.cpu().eval()
    index = index or NeighbourIndex(graph.edge_index, graph.num_nodes)
    return _steady(lambda: gnn_predict(model, graph, index, nodes), repeats, threads)


def features_latency_ms(shipped, graph: Graph, nodes: torch.Tensor, repeats: int, threads: int) -> float:
    """Milliseconds to classify `nodes` with a model on node features alone (an OnnxModel or a module):
    reading the rows of their features, then the forward pass."""
    return _steady(lambda: shipped(graph.x[nodes].reshape(len(nodes), -1, 1, 1)), repeats, threads)
