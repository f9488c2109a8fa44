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

    def forward(self, x: torch.Tensor, edge_index: torch.Tensor) -> torch.Tensor:
        x = x.flatten(1)  # node features may arrive as (N, F, 1, 1), like vector data
        for i, conv in enumerate(self.convs):
            x = nn.functional.dropout(x, self.dropout, self.training)
            x = conv(x, edge_index)
            if i < len(self.convs) - 1:
                x = nn.functional.relu(self.norms[i](x))
        return x  # (N, classes)


def needs_edges(model: nn.Module) -> bool:
    return bool(getattr(model, "needs_edges", False))


def _builder(kind: str):
    def build(spec, input_shape: InputShape, num_classes: int) -> nn.Module:
        c, h, w = input_shape
        return GNN(kind, c * h * w, spec.hidden, num_classes, spec.layers, spec.dropout, spec.heads, spec.norm)

    return build


for _kind in ("gcn", "sage", "gat"):
    MODELS.register(_kind)(_builder(_kind))
