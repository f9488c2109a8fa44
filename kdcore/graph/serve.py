"""What classifying unseen nodes costs where each model ships, measured as GLNN does (Zhang et al. 2022,
section 5.4): a GNN must first gather each node's k-hop neighbourhood (k = its number of layers) from the
graph and run on that subgraph, as a server would have to; an MLP reads the nodes' own features only.
The GNN runs in PyTorch, the MLP as its ONNX file in onnxruntime; both on `threads` threads, the median of
`repeats` calls after a warm-up, and the lowest of ROUNDS such medians (noise only adds time)."""

from __future__ import annotations

import statistics
import time

import torch
from torch import nn

from kdcore.graph.data import Graph

ROUNDS = 3


def gnn_predict(model: nn.Module, graph: Graph, nodes: torch.Tensor, hops: int) -> torch.Tensor:
    """Logits of `nodes` from their `hops`-hop neighbourhood, gathered from the whole graph."""
    from torch_geometric.utils import k_hop_subgraph

    subset, edges, mapping, _ = k_hop_subgraph(nodes, hops, graph.edge_index, relabel_nodes=True,
                                               num_nodes=graph.num_nodes)  # fmt: skip
    return model(graph.x[subset], edges)[mapping]


def _median_ms(call, repeats: int, warmup: int = 3) -> float:
    for _ in range(warmup):
        call()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        call()
        times.append((time.perf_counter() - start) * 1e3)
    return statistics.median(times)


def _steady(call, repeats: int, threads: int) -> float:
    previous = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        with torch.inference_mode():
            return min(_median_ms(call, repeats) for _ in range(ROUNDS))
    finally:
        torch.set_num_threads(previous)


def gnn_latency_ms(model: nn.Module, graph: Graph, nodes: torch.Tensor, repeats: int, threads: int) -> float:
    """Milliseconds to classify `nodes` with a GNN: neighbourhood gathering plus the forward pass."""
    model = model.cpu().eval()
    hops = len(model.convs)
    return _steady(lambda: gnn_predict(model, graph, nodes, hops), repeats, threads)


def features_latency_ms(shipped, graph: Graph, nodes: torch.Tensor, repeats: int, threads: int) -> float:
    """Milliseconds to classify `nodes` with a model on node features alone (an OnnxModel or a module):
    reading the rows of their features, then the forward pass."""
    return _steady(lambda: shipped(graph.x[nodes].reshape(len(nodes), -1, 1, 1)), repeats, threads)
