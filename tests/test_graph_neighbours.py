"""Work on part of a graph: neighbour sampling for mini-batch GNN training, layer-wise inference over chunks of
nodes, and the fanouts setting."""

from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import torch

from kdcore.config import parse_params
from kdcore.errors import ConfigError
from kdcore.graph.data import Graph, build_graph, read_npz_graph
from kdcore.graph.models import GNN
from kdcore.graph.neighbours import NeighbourIndex
from tests.test_graph import block_graph


def small_graph(n: int = 300, seed: int = 3) -> Graph:
    arrays = block_graph(n=n, features=12, seed=seed)
    edges = torch.from_numpy(arrays["edge_index"])
    return Graph(torch.from_numpy(arrays["x"]), torch.from_numpy(arrays["y"]), torch.cat([edges, edges.flip(0)], 1),
                 {}, ["a", "b", "c"])  # fmt: skip


def test_sampling_follows_real_edges_and_at_most_fanout_per_node() -> None:
    graph = small_graph()
    index = NeighbourIndex(graph.edge_index, graph.num_nodes)
    real = {tuple(e) for e in graph.edge_index.T.tolist()}
    nodes = torch.tensor([5, 40, 41, 200])
    fanouts = [3, 2]
    draw = lambda seed: index.neighbourhood(nodes, 2, fanouts, torch.Generator().manual_seed(seed))  # noqa: E731
    subset, edges, at = draw(0)
    followed = [(int(subset[s]), int(subset[d])) for s, d in edges.T]
    assert set(followed) <= real and len(set(followed)) == len(followed)
    into = torch.bincount(edges[1], minlength=len(subset))
    first_hop = into[: len(nodes)]  # the targets come first
    assert torch.equal(first_hop, torch.minimum(index.in_degree[subset[: len(nodes)]], torch.tensor(3)))
    assert int(into[len(nodes) :].max()) <= 2
    assert subset[at].tolist() == nodes.tolist()
    again, other = draw(0), draw(1)
    assert all(torch.equal(a, b) for a, b in zip(draw(0), again, strict=True))
    assert not torch.equal(edges, other[1]) or not torch.equal(subset, other[0])
    # a fanout above every degree follows every edge: the whole neighbourhood
    whole = index.neighbourhood(nodes, 2)
    big = index.neighbourhood(nodes, 2, [1000, 1000], torch.Generator().manual_seed(0))
    assert torch.equal(big[0], whole[0]) and big[1].shape == whole[1].shape


@pytest.mark.parametrize("kind", ["gcn", "sage", "gat"])
def test_layerwise_inference_gives_the_whole_graphs_logits(kind: str, monkeypatch: pytest.MonkeyPatch) -> None:
    from kdcore.graph import train

    graph = small_graph()
    torch.manual_seed(0)
    model = GNN(kind, 12, 16, 3, 2, 0.0, heads=2).eval()
    with torch.no_grad():
        whole = model(graph.x, graph.edge_index)
    chunked = model.layerwise(graph.x, NeighbourIndex(graph.edge_index, graph.num_nodes), chunk=37)
    torch.testing.assert_close(chunked, whole, rtol=1e-5, atol=1e-5)
    monkeypatch.setattr(train, "WHOLE_GRAPH_EDGES", 10)  # node_logits goes layer by layer above it
    torch.testing.assert_close(train.node_logits(model, graph, batch_size=50), whole, rtol=1e-5, atol=1e-5)


def test_a_gnn_trained_on_sampled_batches_learns_what_one_trained_on_the_whole_graph_does(tmp_path: Path) -> None:
    from kdcore.graph.train import NodeTargets, accuracy, node_logits, train_nodes
    from kdcore.models.builtin import MLP

    np.savez(tmp_path / "g.npz", **block_graph(n=300, features=16))
    graph = build_graph(read_npz_graph(tmp_path / "g.npz"), None, split="random", setting="transductive", seed=0,
                        train_per_class=10, validation=60, test=150, normalize_features=False)  # fmt: skip
    cfg = SimpleNamespace(epochs=60, lr=0.01, weight_decay=5e-4, optimizer="adam", momentum=0.9,
                          schedule="constant", batch_size=8)  # fmt: skip
    targets, ce, test = NodeTargets(graph.masks["train"]), [{"name": "ce", "weight": 1.0}], graph.masks["test"]

    def fit(build, **kw):
        torch.manual_seed(0)
        model, history = train_nodes(build(), graph, targets, ce, 1.0, cfg, seed=0, patience=60, log=lambda _: None,
                                     **kw)  # fmt: skip
        return accuracy(node_logits(model, graph), graph.y, test), history

    sampled, history = fit(lambda: GNN("sage", 16, 16, 3, 2, 0.5), fanouts=[4, 4])
    whole, _ = fit(lambda: GNN("sage", 16, 16, 3, 2, 0.5))
    scratch, _ = fit(lambda: MLP(16, [16], 3, 0.5))
    assert sampled > scratch + 0.05 and sampled > whole - 0.05, (sampled, whole, scratch)
    assert len(history) == 60 and all(np.isfinite(r["loss"]) for r in history)
    assert fit(lambda: GNN("sage", 16, 16, 3, 2, 0.5), fanouts=[4, 4])[0] == sampled  # seeded: the same draws
    with pytest.raises(ValueError, match="3 fanouts for a GNN of 2 layers"):
        fit(lambda: GNN("sage", 16, 16, 3, 2, 0.5), fanouts=[4, 4, 4])


def test_fanouts_must_match_every_gnns_layers(tmp_path: Path) -> None:
    from tests.test_graph_pipeline import graph_raw

    np.savez(tmp_path / "g.npz", **block_graph())
    raw = graph_raw(tmp_path, tmp_path / "g.npz")
    raw["data"]["graph"]["fanouts"] = [10, 10, 5]
    with pytest.raises(ConfigError, match=r"data.graph.fanouts: 3 given, but teachers.sage.model \(sage\) has 2"):
        parse_params(raw)
    raw["data"]["graph"]["fanouts"] = [10, 5]
    assert parse_params(raw).data.graph.fanouts == [10, 5]
