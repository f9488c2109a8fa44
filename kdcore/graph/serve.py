"""What classifying unseen nodes costs where each model ships, measured as GLNN does (Zhang et al. 2022,
section 5.4): a GNN must first gather each node's k-hop neighbourhood (k = its number of layers) from the
graph and run on that subgraph, as a server would have to; an MLP reads the nodes' own features only.
The gathering reads a NeighbourIndex (each node's in-neighbours, stored once per graph as a server keeps its
adjacency), so it costs what the neighbourhood holds, not what the whole graph holds.
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

ROUNDS = 3
BUDGET_S, MIN_REPEATS = 20.0, 5


class NeighbourIndex:
    """A graph's edges grouped by destination (compressed sparse rows): node v's in-neighbours are
    `sources[offsets[v]:offsets[v + 1]]`. Built once; reading a node's neighbours then costs its degree."""

    def __init__(self, edge_index: torch.Tensor, num_nodes: int) -> None:
        destinations = edge_index[1]
        self.sources = edge_index[0][torch.argsort(destinations, stable=True)].contiguous()
        self.offsets = torch.zeros(num_nodes + 1, dtype=torch.int64)
        self.offsets[1:] = torch.cumsum(torch.bincount(destinations, minlength=num_nodes), 0)
        self.num_nodes = num_nodes

    def in_edges(self, nodes: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(sources, destinations) of every edge into `nodes`."""
        starts = self.offsets[nodes]
        counts = self.offsets[nodes + 1] - starts
        firsts = torch.cumsum(counts, 0) - counts  # where each node's edges begin in the output
        positions = torch.arange(int(counts.sum())) + torch.repeat_interleave(starts - firsts, counts)
        return self.sources[positions], torch.repeat_interleave(nodes, counts)

    def neighbourhood(self, nodes: torch.Tensor, hops: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """What a GNN of `hops` layers needs to classify `nodes`: the nodes within `hops` hops (the distinct
        `nodes` first), the edges into the nodes within `hops - 1` hops (relabelled to positions in that node
        list), and the positions of `nodes`."""
        seen = torch.zeros(self.num_nodes, dtype=torch.bool)
        targets = torch.unique(nodes)
        seen[targets] = True
        order, inner, frontier = [targets], [], targets
        for _ in range(hops):
            inner.append(frontier)
            sources, _ = self.in_edges(frontier)
            sources = torch.unique(sources)
            frontier = sources[~seen[sources]]
            seen[frontier] = True
            order.append(frontier)
        subset = torch.cat(order)
        sources, destinations = self.in_edges(torch.cat(inner))
        position = torch.full((self.num_nodes,), -1, dtype=torch.int64)
        position[subset] = torch.arange(len(subset))
        return subset, torch.stack([position[sources], position[destinations]]), position[nodes]


def gnn_predict(model: nn.Module, graph: Graph, index: NeighbourIndex, nodes: torch.Tensor) -> torch.Tensor:
    """Logits of `nodes` from their neighbourhood, gathered through `index`. A GraphSAGE or GAT gives the
    logits it gives on the whole graph; a GCN's normalisation sees the outermost hop's nodes with only their
    gathered edges, as any gathering of a fixed number of hops does."""
    subset, edges, mapping = index.neighbourhood(nodes, len(model.convs))
    return model(graph.x[subset], edges)[mapping]


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
