"""Graph data and models: the Planetoid reader and its restricted unpickler, the user's .npz graphs, the
splits and the inductive setting, GNNs forward and backward, and distillation into an MLP on a tiny graph."""

from __future__ import annotations

import os
import pickle
from collections import defaultdict
from pathlib import Path

import numpy as np
import pytest
import scipy.sparse as sp
import torch

from kdcore.errors import DataError
from kdcore.graph.data import build_graph, read_npz_graph
from kdcore.graph.planetoid import RefusedPickle, read_planetoid, safe_unpickle


def block_graph(n: int = 240, classes: int = 3, features: int = 24, seed: int = 0) -> dict[str, np.ndarray]:
    """A stochastic block model: nodes of a class link mostly to each other; features are noisy class
    signatures, so edges carry information that features alone only partly do."""
    rng = np.random.default_rng(seed)
    y = np.arange(n) % classes
    same = y[:, None] == y[None, :]
    links = np.triu(rng.random((n, n)) < np.where(same, 0.08, 0.005), 1)
    src, dst = np.nonzero(links)
    centres = rng.normal(size=(classes, features))
    x = (0.6 * centres[y] + rng.normal(size=(n, features))).clip(min=0).astype(np.float32)
    return {"x": x, "y": y.astype(np.int64), "edge_index": np.stack([src, dst]).astype(np.int64)}


def write_planetoid(root: Path, name: str, arrays: dict[str, np.ndarray], train: int, test: int) -> None:
    """Writes `arrays` in the Planetoid raw format (protocol 2 pickles, as the published files are)."""
    raw = root / name / "raw"
    raw.mkdir(parents=True)
    n, classes = len(arrays["y"]), int(arrays["y"].max()) + 1
    onehot = np.eye(classes, dtype=np.int64)[arrays["y"]]
    test_index = np.arange(n - test, n)[::-1]  # stored out of order, as Cora's are
    pool = np.arange(n - test)
    files = {
        "x": sp.csr_matrix(arrays["x"][:train]),
        "y": onehot[:train],
        "allx": sp.csr_matrix(arrays["x"][pool]),
        "ally": onehot[pool],
        "tx": sp.csr_matrix(arrays["x"][test_index]),  # in the order of the test.index file
        "ty": onehot[test_index],
    }
    graph = defaultdict(list)
    for a, b in arrays["edge_index"].T:
        graph[int(a)].append(int(b))
    files["graph"] = graph
    for part, value in files.items():
        (raw / f"ind.{name.lower()}.{part}").write_bytes(pickle.dumps(value, protocol=2))
    (raw / f"ind.{name.lower()}.test.index").write_text("\n".join(str(i) for i in test_index) + "\n")


def test_the_planetoid_reader_builds_the_graph_and_its_public_split(tmp_path: Path) -> None:
    arrays = block_graph()
    write_planetoid(tmp_path, "Tiny", arrays, train=30, test=60)
    read = read_planetoid(tmp_path, "Tiny")
    assert np.allclose(read["x"], arrays["x"]) and (read["y"] == arrays["y"]).all()
    edges = {tuple(e) for e in arrays["edge_index"].T}
    expected = edges | {(b, a) for a, b in edges}
    assert {tuple(e) for e in read["edge_index"].T} == expected  # both directions, once each
    assert read["train_mask"].sum() == 30 and read["train_mask"][:30].all()
    assert read["val_mask"][30:].sum() == read["val_mask"].sum() > 0
    assert read["test_mask"].sum() == 60 and read["test_mask"][-60:].all()


def test_the_restricted_unpickler_refuses_a_payload(tmp_path: Path) -> None:
    marker = tmp_path / "ran"

    class Payload:
        def __reduce__(self):
            return (os.system, (f"touch {marker}",))

    with pytest.raises(RefusedPickle, match=r"refused: the pickle names (posix|os|nt)\.system"):
        safe_unpickle(pickle.dumps(Payload(), protocol=2), "ind.evil.x")
    assert not marker.exists()
    # a payload in a real dataset's file ends the read with the file's name, before anything runs
    write_planetoid(tmp_path / "root", "Tiny", block_graph(), train=30, test=60)
    (tmp_path / "root/Tiny/raw/ind.tiny.graph").write_bytes(pickle.dumps(Payload(), protocol=2))
    with pytest.raises(RefusedPickle, match=r"ind\.tiny\.graph: refused"):
        read_planetoid(tmp_path / "root", "Tiny")
    assert not marker.exists()
    # what the format does use goes through
    allowed = {"a": np.arange(3), "m": sp.csr_matrix(np.eye(2)), "g": defaultdict(list, {0: [1]})}
    back = safe_unpickle(pickle.dumps(allowed["m"], protocol=2), "m")
    assert (back.toarray() == np.eye(2)).all()
    assert (safe_unpickle(pickle.dumps(allowed["a"], protocol=2), "a") == np.arange(3)).all()


def test_a_missing_planetoid_dataset_names_what_was_looked_for(tmp_path: Path) -> None:
    with pytest.raises(DataError, match=r"no Planetoid files of Cora.*nothing is downloaded"):
        read_planetoid(tmp_path, "Cora")


@pytest.mark.parametrize(
    ("change", "message"),
    [
        (lambda a: a.update(edge_index=np.array([[0, 5], [1, 5]])), r"column 1 is a self-loop on node 5"),
        (lambda a: a.update(edge_index=np.array([[0, 2, 0], [1, 3, 1]])), r"columns 0 and 2 are the same edge"),
        (lambda a: a.update(edge_index=np.array([[0, 999], [1, 2]])), r"column 1 joins \[999, 2\], outside nodes"),
        (lambda a: a.update(edge_index=np.array([0, 1, 2])), r"edge_index must be \(2, E\)"),
        (lambda a: a.pop("edge_index"), r"missing array\(s\) edge_index"),
        (lambda a: a.update(y=a["y"].astype(np.float32)), r"y must be \(240,\) integers"),
        (lambda a: a["x"].__setitem__((7, 2), np.nan), r"x row 7 holds a NaN"),
        (
            lambda a: a.update(x=np.array([None] * 240, dtype=object)),
            r"Object arrays cannot be loaded.*store plain numeric arrays",
        ),
    ],
)
def test_a_bad_graph_file_ends_in_one_line(tmp_path: Path, change, message: str) -> None:
    arrays = block_graph()
    change(arrays)
    np.savez(tmp_path / "g.npz", **arrays)
    with pytest.raises(DataError, match=message) as err:
        read_npz_graph(tmp_path / "g.npz")
    assert "\n" not in str(err.value)


def test_random_splits_are_seeded_and_every_class_trains(tmp_path: Path) -> None:
    np.savez(tmp_path / "g.npz", **block_graph())
    arrays = read_npz_graph(tmp_path / "g.npz")
    a = build_graph(arrays, None, split="random", setting="transductive", seed=3, validation=40, test=80)
    b = build_graph(arrays, None, split="random", setting="transductive", seed=3, validation=40, test=80)
    c = build_graph(arrays, None, split="random", setting="transductive", seed=4, validation=40, test=80)
    assert all(torch.equal(a.masks[m], b.masks[m]) for m in a.masks)
    assert not torch.equal(a.masks["train"], c.masks["train"])
    assert torch.bincount(a.y[a.masks["train"]]).tolist() == [20, 20, 20]
    assert int(a.masks["val"].sum()) == 40 and int(a.masks["test"].sum()) == 80
    with pytest.raises(DataError, match=r"graph.split is public but the data has no train_mask"):
        build_graph(arrays, None, split="public", setting="transductive", seed=0)


def test_the_inductive_setting_leaks_no_held_out_node_or_edge(tmp_path: Path) -> None:
    np.savez(tmp_path / "g.npz", **block_graph())
    graph = build_graph(read_npz_graph(tmp_path / "g.npz"), None, split="random", setting="inductive", seed=1,
                        validation=40, test=100, held_out=0.3)  # fmt: skip
    held = graph.masks["held_out"]
    assert int(held.sum()) == 30 and not (held & ~graph.masks["test"]).any()
    observed, ids = graph.observed()
    assert observed.num_nodes == graph.num_nodes - 30
    assert not held[ids].any()  # no held-out node in the training graph
    assert torch.equal(observed.x, graph.x[ids]) and torch.equal(observed.y, graph.y[ids])
    original = ids[observed.edge_index]  # the training graph's edges, in the full graph's node ids
    assert not held[original].any()  # no edge touches a held-out node
    kept = {tuple(e) for e in original.T.tolist()}
    inside = ~held[graph.edge_index].any(0)
    assert kept == {tuple(e) for e in graph.edge_index[:, inside].T.tolist()}  # and every other edge stays
    assert int(observed.masks["test"].sum()) == 70


@pytest.mark.parametrize("kind", ["gcn", "sage", "gat"])
def test_each_gnn_runs_forward_and_backward(kind: str, tmp_path: Path) -> None:
    from pydantic import TypeAdapter

    from kdcore.config.models import ModelSpec
    from kdcore.models import build_model

    np.savez(tmp_path / "g.npz", **block_graph())
    graph = build_graph(read_npz_graph(tmp_path / "g.npz"), None, split="random", setting="transductive", seed=0,
                        validation=40, test=80)  # fmt: skip
    spec = TypeAdapter(ModelSpec).validate_python({"name": kind, "hidden": 8, "heads": 2})
    model = build_model(spec, (graph.x.shape[1], 1, 1), graph.num_classes)
    logits = model(graph.x, graph.edge_index)
    assert logits.shape == (graph.num_nodes, 3) and torch.isfinite(logits).all()
    torch.nn.functional.cross_entropy(logits[graph.masks["train"]], graph.y[graph.masks["train"]]).backward()
    grads = [p.grad for p in model.parameters()]
    assert all(g is not None and torch.isfinite(g).all() for g in grads) and any(g.abs().sum() > 0 for g in grads)


@pytest.mark.parametrize("kind", ["gcn", "sage", "gat"])
def test_gathering_a_neighbourhood_gives_the_whole_graphs_logits(kind: str) -> None:
    from torch_geometric.utils import k_hop_subgraph

    from kdcore.graph.data import Graph
    from kdcore.graph.models import GNN
    from kdcore.graph.serve import NeighbourIndex, gnn_predict

    arrays = block_graph(n=300, features=12, seed=3)
    edges = torch.from_numpy(arrays["edge_index"])
    edges = torch.cat([edges, edges.flip(0)], 1)
    graph = Graph(torch.from_numpy(arrays["x"]), torch.from_numpy(arrays["y"]), edges, {}, ["a", "b", "c"])
    torch.manual_seed(0)
    model = GNN(kind, 12, 16, 3, 2, 0.0, heads=2).eval()
    index = NeighbourIndex(graph.edge_index, graph.num_nodes)
    nodes = torch.tensor([17, 4, 250, 4])  # a repeated node is answered twice
    subset, sub_edges, mapping = index.neighbourhood(nodes, 2)
    expected = k_hop_subgraph(nodes, 2, graph.edge_index, num_nodes=graph.num_nodes)[0]
    assert sorted(subset.tolist()) == sorted(expected.tolist())
    assert subset[mapping].tolist() == nodes.tolist() and sub_edges.min() >= 0
    with torch.no_grad():
        whole = model(graph.x, graph.edge_index)[nodes]
        gathered = gnn_predict(model, graph, index, nodes)
    torch.testing.assert_close(gathered, whole, rtol=1e-5, atol=1e-5)
    assert len(subset) < graph.num_nodes  # the check above is not the whole graph run again


def test_an_mlp_distilled_from_a_gnn_beats_one_trained_on_labels_alone(tmp_path: Path) -> None:
    """On a graph whose edges carry what the features lack, the GNN's soft labels on the unlabelled nodes
    teach an MLP more than the few labels do (GLNN's claim, on a tiny scale)."""
    from types import SimpleNamespace

    from kdcore.graph.models import GNN
    from kdcore.graph.train import NodeTargets, accuracy, node_logits, train_nodes
    from kdcore.models.builtin import MLP

    arrays = block_graph(n=300, features=16)
    np.savez(tmp_path / "g.npz", **arrays)
    graph = build_graph(read_npz_graph(tmp_path / "g.npz"), None, split="random", setting="transductive", seed=0,
                        train_per_class=5, validation=60, test=150, normalize_features=False)  # fmt: skip
    cfg = SimpleNamespace(epochs=60, lr=0.01, weight_decay=5e-4, optimizer="adam", momentum=0.9,
                          schedule="constant", batch_size=128)  # fmt: skip
    train = graph.masks["train"]
    ce = [{"name": "ce", "weight": 1.0}]
    teacher, _ = train_nodes(GNN("sage", 16, 16, 3, 2, 0.5), graph, NodeTargets(train), ce, 1.0, cfg, seed=0,
                             patience=60, log=lambda _: None)  # fmt: skip
    soft = node_logits(teacher, graph)
    scratch, _ = train_nodes(MLP(16, [32], 3, 0.5), graph, NodeTargets(train), ce, 1.0, cfg, seed=0, patience=60,
                             log=lambda _: None)  # fmt: skip
    student, history = train_nodes(MLP(16, [32], 3, 0.5), graph, NodeTargets(train, ~train, soft),
                                   [{"name": "kd", "weight": 1.0}], 1.0, cfg, seed=0, patience=60,
                                   log=lambda _: None)  # fmt: skip
    test = graph.masks["test"]
    acc = {name: accuracy(node_logits(m, graph), graph.y, test) for name, m in
           (("teacher", teacher), ("scratch", scratch), ("student", student))}  # fmt: skip
    assert acc["teacher"] > acc["scratch"] + 0.05, acc
    assert acc["student"] > acc["scratch"] + 0.05, acc
    assert len(history) == 60 and all(np.isfinite(r["loss"]) for r in history)


def test_a_prepared_graph_round_trips_and_its_checks_catch_what_the_readers_would(tmp_path: Path) -> None:
    from kdcore.data.validate import run_suites
    from kdcore.graph.prepared import graph_tables, load_graph, save_graph

    np.savez(tmp_path / "g.npz", **block_graph())
    graph = build_graph(read_npz_graph(tmp_path / "g.npz"), ["a", "b", "c"], split="random", setting="inductive",
                        seed=0, validation=40, test=80)  # fmt: skip
    save_graph(tmp_path / "graph.safetensors", graph)
    back = load_graph(tmp_path / "graph.safetensors")
    assert back.class_names == ["a", "b", "c"] and set(back.masks) == {"train", "val", "test", "held_out"}
    assert all(torch.equal(getattr(back, k), getattr(graph, k)) for k in ("x", "y", "edge_index"))
    assert all(torch.equal(back.masks[k], graph.masks[k]) for k in graph.masks)
    assert all(o.success for o in run_suites(graph_tables(graph), "graph"))
    # a self-loop, a doubled edge, an edge out of range and a class without a training node all fail
    bad = build_graph(read_npz_graph(tmp_path / "g.npz"), None, split="random", setting="transductive", seed=0,
                      validation=40, test=80)  # fmt: skip
    extra = torch.tensor([[3, 1], [3, 400]])  # a self-loop, a node out of range, and the first edge again
    bad.edge_index = torch.cat([bad.edge_index, extra, bad.edge_index[:, :1]], 1)
    bad.masks["train"] &= bad.y != 2
    failed = {(o.table, o.expectation) for o in run_suites(graph_tables(bad), "graph") if not o.success}
    assert failed == {
        ("edges", "expect_column_values_to_be_in_set"),
        ("edges", "expect_compound_columns_to_be_unique"),
        ("edges", "expect_column_values_to_be_between"),
        ("train_nodes", "expect_column_distinct_values_to_contain_set"),
    }
