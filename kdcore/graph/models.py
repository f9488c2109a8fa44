"""Graph neural networks for node classification, built on PyTorch Geometric's convolutions: GCN (Kipf and
Welling 2017), GraphSAGE (Hamilton et al. 2017, mean aggregation) and GAT (Velickovic et al. 2018).

Each takes `(x, edge_index)`: (N, F) node features and (2, E) edges, and returns (N, classes) logits. A
model `is_graph_model` when its forward needs the edges; an MLP on node features needs none, which is what
makes it fast to serve: no neighbour has to be fetched.
"""

from __future__ import annotations

import torch
from torch import nn

from kdcore.models import MODELS, InputShape


class GNN(nn.Module):
    """`layers` graph convolutions; ReLU, optional normalisation and dropout between them."""

    needs_edges = True

    def __init__(self, kind: str, in_features: int, hidden: int, num_classes: int, layers: int, dropout: float,
                 heads: int = 8, norm: str = "none") -> None:  # fmt: skip
        super().__init__()
        from torch_geometric.nn import GATConv, GCNConv, SAGEConv

        self.kind, self.dropout = kind, dropout
        self.convs = nn.ModuleList()
        self.norms = nn.ModuleList()
        width = in_features
        for i in range(layers):
            last = i == layers - 1
            out = num_classes if last else hidden
            if kind == "gcn":
                conv = GCNConv(width, out)
            elif kind == "sage":
                conv = SAGEConv(width, out, aggr="mean")
            else:  # gat: concatenated heads inside, one averaged head out
                conv = GATConv(width, out, heads=1 if last else heads, concat=not last, dropout=dropout)
                out = out if last else out * heads
            self.convs.append(conv)
            if not last:
                self.norms.append(
                    nn.BatchNorm1d(out) if norm == "batch" else nn.LayerNorm(out) if norm == "layer" else nn.Identity()
                )
            width = out

    def forward(self, x: torch.Tensor, edge_index: torch.Tensor, degree: torch.Tensor | None = None) -> torch.Tensor:
        """Logits of every node of (x, edge_index). `degree` (N,): the nodes' in-degree in a larger graph of
        which `edge_index` is a part (a gathered neighbourhood, a sampled batch); a GCN then normalises each
        edge with those degrees, as it does on the whole graph. The other kinds do not need it."""
        x = x.flatten(1)  # node features may arrive as (N, F, 1, 1), like vector data
        for i in range(len(self.convs)):
            x = self.layer(i, x, edge_index, degree)
        return x  # (N, classes)

    def layer(self, i: int, x: torch.Tensor, edge_index: torch.Tensor, degree: torch.Tensor | None) -> torch.Tensor:
        conv = self.convs[i]
        x = nn.functional.dropout(x, self.dropout, self.training)
        if self.kind == "gcn" and degree is not None:
            x = _gcn_with_degree(conv, x, edge_index, degree)
        else:
            x = conv(x, edge_index)
        if i < len(self.convs) - 1:
            x = nn.functional.relu(self.norms[i](x))
        return x

    @torch.no_grad()
    def layerwise(self, x: torch.Tensor, index, chunk: int) -> torch.Tensor:
        """Logits of every node of the graph `index` (a NeighbourIndex) holds, one layer at a time over chunks
        of `chunk` nodes: memory follows a chunk's edges and one layer's outputs, not every edge's messages."""
        from kdcore.graph.neighbours import NeighbourIndex

        assert isinstance(index, NeighbourIndex)
        degree, h = index.in_degree, x.flatten(1)
        for i in range(len(self.convs)):
            parts = []
            for start in range(0, index.num_nodes, chunk):
                nodes = torch.arange(start, min(start + chunk, index.num_nodes))
                subset, edges, mapping = index.neighbourhood(nodes, 1)
                parts.append(self.layer(i, h[subset], edges, degree[subset])[mapping])
            h = torch.cat(parts)
        return h


def _gcn_with_degree(conv, x: torch.Tensor, edge_index: torch.Tensor, degree: torch.Tensor) -> torch.Tensor:
    """GCNConv (Kipf and Welling 2017) with D^-1/2 (A + I) D^-1/2 taken from `degree` (in-degrees without the
    self-loop) rather than from `edge_index`, which may hold only part of each node's edges."""
    n = x.shape[0]
    loops = torch.arange(n)
    edges = torch.cat([edge_index, torch.stack([loops, loops])], 1)
    scale = (degree.to(x.dtype) + 1.0).pow(-0.5)
    weight = scale[edges[0]] * scale[edges[1]]
    out = conv.propagate(edges, x=conv.lin(x), edge_weight=weight)
    return out if conv.bias is None else out + conv.bias


def needs_edges(model: nn.Module) -> bool:
    return bool(getattr(model, "needs_edges", False))


def _builder(kind: str):
    def build(spec, input_shape: InputShape, num_classes: int) -> nn.Module:
        c, h, w = input_shape
        return GNN(kind, c * h * w, spec.hidden, num_classes, spec.layers, spec.dropout, spec.heads, spec.norm)

    return build


for _kind in ("gcn", "sage", "gat"):
    MODELS.register(_kind)(_builder(_kind))
