"""Graph data for node classification: node features, labels, undirected edges and the node splits.

Sources: the Planetoid raw files (kdcore/graph/planetoid.py, read without running their pickles) and a
safe format of the user's own, an `.npz` read without pickle: `x` (N, F) features, `y` (N,) integer labels
(-1: unlabelled), `edge_index` (2, E) integer node pairs, and optionally `train_mask`, `val_mask`,
`test_mask` (N,) booleans, the data's own split.

Splits: `public` (the data's own masks: Cora's 20 labelled nodes per class, 500 validation, 1,000 test)
or `random` (seeded: `train_per_class` labelled nodes of each class, then `validation` and `test` nodes
drawn from the rest). Two settings (Zhang et al. 2022, GLNN, section 5):
- transductive: every node and edge is seen in training; labels only of the training nodes;
- inductive: a share of the test nodes is held out, with every edge that touches one. Teachers and
  students train on the observed graph alone; at test time the held-out nodes (and their edges) arrive.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from kdcore.errors import DataError
from kdcore.graph.neighbours import NeighbourIndex

MASKS = ("train", "val", "test")


@dataclass
class Graph:
    """One graph. Masks are (N,) bool tensors: `train`, `val`, `test`, and in the inductive setting `held_out`
    (test nodes outside the training graph). `test` is every test node: `test & held_out` are the inductive
    ones, `test & ~held_out` the transductive ones."""

    x: torch.Tensor  # (N, F) float32
    y: torch.Tensor  # (N,) int64, -1 where a node has no label
    edge_index: torch.Tensor  # (2, E) int64, both directions, no self-loops or duplicates
    masks: dict[str, torch.Tensor] = field(default_factory=dict)
    class_names: list[str] = field(default_factory=list)

    @property
    def num_nodes(self) -> int:
        return int(self.x.shape[0])

    @property
    def num_classes(self) -> int:
        return len(self.class_names)

    @functools.cached_property
    def neighbours(self) -> NeighbourIndex:
        """The edges grouped by destination, built on first use (kdcore/graph/neighbours.py)."""
        return NeighbourIndex(self.edge_index, self.num_nodes)

    def mask(self, name: str) -> torch.Tensor:
        return self.masks.get(name, torch.zeros(self.num_nodes, dtype=torch.bool))

    def observed(self) -> tuple[Graph, torch.Tensor]:
        """The graph training sees, relabelled to its own nodes, and their ids in this graph: every node but the
        held-out ones, every edge that touches none of them. Without held-out nodes, the graph itself."""
        held = self.mask("held_out")
        keep = torch.nonzero(~held).flatten()
        if not bool(held.any()):
            return self, keep
        new_id = torch.full((self.num_nodes,), -1, dtype=torch.int64)
        new_id[keep] = torch.arange(len(keep))
        inside = (~held[self.edge_index[0]]) & (~held[self.edge_index[1]])
        edges = new_id[self.edge_index[:, inside]]
        masks = {k: v[keep] for k, v in self.masks.items() if k != "held_out"}
        return Graph(self.x[keep], self.y[keep], edges, masks, list(self.class_names)), keep


def undirected(edge_index: np.ndarray, num_nodes: int, source: str, strict: bool) -> np.ndarray:
    """Both directions of every edge, sorted, no self-loops or duplicates. With `strict` (the user's own
    files), a self-loop, a pair listed twice or a node outside 0..N-1 is refused with the edge's column."""
    edge_index = np.asarray(edge_index)
    if edge_index.ndim != 2 or edge_index.shape[0] != 2:
        raise DataError(f"{source}: edge_index must be (2, E), found shape {edge_index.shape}")
    if edge_index.size and not np.issubdtype(edge_index.dtype, np.integer):
        raise DataError(f"{source}: edge_index must hold integer node ids, found {edge_index.dtype}")
    edge_index = edge_index.astype(np.int64)
    out = (edge_index < 0).any(0) | (edge_index >= num_nodes).any(0)
    if out.any():
        j = int(np.flatnonzero(out)[0])
        raise DataError(
            f"{source}: edge_index column {j} joins {edge_index[:, j].tolist()}, outside nodes 0..{num_nodes - 1}"
        )
    if strict:
        loops = np.flatnonzero(edge_index[0] == edge_index[1])
        if loops.size:
            j = int(loops[0])
            raise DataError(f"{source}: edge_index column {j} is a self-loop on node {int(edge_index[0, j])}")
        keys = edge_index[0] * num_nodes + edge_index[1]
        _, first, counts = np.unique(keys, return_index=True, return_counts=True)
        if (counts > 1).any():
            j = int(np.sort(first[counts > 1])[0])
            twice = np.flatnonzero(keys == keys[j])
            raise DataError(f"{source}: edge_index columns {twice[0]} and {twice[1]} are the same edge "
                            f"{edge_index[:, j].tolist()}")  # fmt: skip
    from kdcore.graph.planetoid import symmetric_edges

    return symmetric_edges(edge_index, num_nodes, source)


def read_npz_graph(path: Path) -> dict[str, np.ndarray]:
    """The user's graph file, read without pickle."""
    path = Path(path)
    if not path.is_file():
        raise DataError(f"{path}: no such file (a graph .npz holds x, y, edge_index)")
    try:
        archive = np.load(path, allow_pickle=False)
    except ValueError as err:
        raise DataError(f"{path}: not a readable .npz without pickle ({err})") from None
    except Exception as err:  # a zip error, a truncated file
        raise DataError(f"{path}: not a readable .npz ({type(err).__name__}: {err})") from None
    with archive:
        missing = [k for k in ("x", "y", "edge_index") if k not in archive.files]
        if missing:
            found = ", ".join(archive.files) or "none"
            raise DataError(f"{path}: missing array(s) {', '.join(missing)} (found {found})")
        try:
            wanted = ("x", "y", "edge_index", *(f"{m}_mask" for m in MASKS))
            arrays = {k: archive[k] for k in archive.files if k in wanted}
        except ValueError as err:  # an object array needs pickle
            raise DataError(f"{path}: {err}; store plain numeric arrays") from None
    x, y = arrays["x"], arrays["y"]
    if x.ndim != 2 or not np.issubdtype(x.dtype, np.number) or np.issubdtype(x.dtype, np.complexfloating):
        raise DataError(f"{path}: x must be a real (N, F) matrix, found {x.dtype} of shape {x.shape}")
    if y.shape != (len(x),) or not np.issubdtype(y.dtype, np.integer):
        raise DataError(f"{path}: y must be ({len(x)},) integers (class ids, -1 unlabelled), found {y.dtype} {y.shape}")
    if not np.isfinite(x).all():
        row = int(np.flatnonzero(~np.isfinite(x).all(1))[0])
        raise DataError(f"{path}: x row {row} holds a NaN or infinite feature")
    if (y < -1).any():
        i = int(np.flatnonzero(y < -1)[0])
        raise DataError(f"{path}: y[{i}] = {int(y[i])}; labels are class ids >= 0 (-1: none)")
    out = {"x": x.astype(np.float32), "y": y.astype(np.int64),
           "edge_index": undirected(arrays["edge_index"], len(x), f"{path} edge_index", strict=True)}  # fmt: skip
    for m in MASKS:
        key = f"{m}_mask"
        if key in arrays:
            mask = arrays[key]
            if mask.shape != (len(x),) or mask.dtype != np.bool_:
                raise DataError(f"{path}: {key} must be ({len(x)},) booleans, found {mask.dtype} {mask.shape}")
            out[key] = mask
    return out


def public_masks(arrays: dict[str, np.ndarray], source: str) -> dict[str, np.ndarray]:
    missing = [m for m in MASKS if f"{m}_mask" not in arrays]
    if missing:
        names = ", ".join(f"{m}_mask" for m in missing)
        raise DataError(f"{source}: graph.split is public but the data has no {names}; use graph.split: random")
    return {m: arrays[f"{m}_mask"].copy() for m in MASKS}


def random_masks(
    y: np.ndarray, num_classes: int, train_per_class: int, validation: int, test: int | None, seed: int
) -> dict[str, np.ndarray]:
    """`train_per_class` labelled nodes of each class, then `validation` and `test` (None: all the rest) nodes
    drawn from the other labelled nodes; seeded."""
    rng = np.random.default_rng(seed)
    n = len(y)
    train = np.zeros(n, dtype=bool)
    for c in range(num_classes):
        nodes = np.flatnonzero(y == c)
        if len(nodes) < train_per_class:
            raise DataError(f"graph.train_per_class: {train_per_class}, but class {c} has only {len(nodes)} nodes")
        train[rng.choice(nodes, train_per_class, replace=False)] = True
    rest = rng.permutation(np.flatnonzero(~train & (y >= 0)))
    want = validation + (test if test is not None else 1)
    if len(rest) < want:
        raise DataError(f"graph.validation + graph.test: {want} nodes wanted, {len(rest)} labelled nodes are left")
    val = np.zeros(n, dtype=bool)
    val[rest[:validation]] = True
    tst = np.zeros(n, dtype=bool)
    tst[rest[validation : validation + test] if test is not None else rest[validation:]] = True
    return {"train": train, "val": val, "test": tst}


def held_out_nodes(test: np.ndarray, fraction: float, seed: int) -> np.ndarray:
    """The inductive setting's held-out nodes: `fraction` of the test nodes, seeded."""
    nodes = np.flatnonzero(test)
    count = int(round(fraction * len(nodes)))
    held = np.zeros(len(test), dtype=bool)
    held[np.random.default_rng(seed + 7_919).choice(nodes, count, replace=False)] = True
    return held


def check_graph(graph: Graph, source: str) -> None:
    """Structural checks, each a one-line DataError naming what is wrong."""
    n = graph.num_nodes
    if graph.y.shape != (n,):
        raise DataError(f"{source}: {n} nodes but {tuple(graph.y.shape)} labels")
    masks = {m: graph.mask(m) for m in MASKS}
    for a, b in (("train", "val"), ("train", "test"), ("val", "test")):
        both = masks[a] & masks[b]
        if both.any():
            raise DataError(f"{source}: node {int(torch.nonzero(both)[0])} is in both the {a} and the {b} split")
    for m, mask in masks.items():
        if not mask.any():
            raise DataError(f"{source}: the {m} split holds no node")
        unlabelled = mask & (graph.y < 0)
        if unlabelled.any():
            raise DataError(f"{source}: {m} node {int(torch.nonzero(unlabelled)[0])} has no label")
    present = set(torch.unique(graph.y[masks["train"]]).tolist())
    absent = [graph.class_names[c] for c in range(graph.num_classes) if c not in present]
    if absent:
        raise DataError(f"{source}: class(es) {', '.join(absent)} have no training node")


def build_graph(
    arrays: dict[str, np.ndarray],
    class_names: list[str] | None,
    *,
    split: str,
    setting: str,
    seed: int,
    train_per_class: int = 20,
    validation: int = 500,
    test: int | None = 1000,
    held_out: float = 0.2,
    normalize_features: bool = True,
    source: str = "graph",
) -> Graph:
    """The Graph of a source's arrays with its split (public or random, seeded) and, in the inductive setting,
    its held-out test nodes (seeded); features scaled to sum to one per node when `normalize_features`
    (PyG's NormalizeFeatures; a node without features stays zero). Checked: one line names a defect."""
    x, y = arrays["x"].astype(np.float32), arrays["y"].astype(np.int64)
    labelled = y[y >= 0]
    num_classes = int(labelled.max()) + 1 if labelled.size else 0
    names = list(class_names) if class_names else [str(c) for c in range(num_classes)]
    if len(names) < num_classes:
        raise DataError(f"{source}: labels up to {num_classes - 1} but {len(names)} class names")
    if split == "public":
        masks = public_masks(arrays, source)
    elif split == "random":
        masks = random_masks(y, len(names), train_per_class, validation, test, seed)
    else:
        raise DataError(f"{source}: unknown split {split!r}; public or random")
    if setting == "inductive":
        masks["held_out"] = held_out_nodes(masks["test"], held_out, seed)
    elif setting != "transductive":
        raise DataError(f"{source}: unknown setting {setting!r}; transductive or inductive")
    if normalize_features:
        sums = np.abs(x).sum(1, keepdims=True)
        x = np.divide(x, sums, out=np.zeros_like(x), where=sums > 0)
    graph = Graph(torch.from_numpy(x), torch.from_numpy(y), torch.from_numpy(arrays["edge_index"]),
                  {k: torch.from_numpy(v) for k, v in masks.items()}, names)  # fmt: skip
    check_graph(graph, source)
    return graph
