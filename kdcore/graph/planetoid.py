"""The Planetoid raw format (Yang et al. 2016, "Revisiting Semi-Supervised Learning with Graph Embeddings"):
`<root>/<Name>/raw/ind.<name>.{x,y,tx,ty,allx,ally,graph,test.index}`, as PyG's
`torch_geometric.datasets.Planetoid` downloads it (Cora, CiteSeer, PubMed).

Seven of the eight files are Python 2 pickles. Loading a pickle can run any code it names, so they are
read by an unpickler that resolves only the globals the format uses: numpy arrays and dtypes, scipy's
CSR matrix, the adjacency list's `defaultdict(list)`. A file that names anything else is refused before
anything in it runs, with the global it asked for.

The graph is assembled as PyG's `read_planetoid_data` does, so the figures compare with PyG's: features
of the labelled pool (`allx`) then of the test nodes (`tx`), test rows put back in their node order, edges
from the adjacency lists made symmetric, without self-loops and duplicates; for CiteSeer, test indices
with no features (isolated nodes) get zero features and no label (-1). The public split is the format's:
the first len(y) nodes train, the next 500 validate, the test.index nodes test.
"""

from __future__ import annotations

import io
import pickle
from pathlib import Path

import numpy as np

from kdcore.errors import DataError

FILES = ("x", "y", "tx", "ty", "allx", "ally", "graph", "test.index")
PUBLIC_VALIDATION = 500

# (module, name) as the pickles spell them -> where the object lives now
ALLOWED_GLOBALS = {
    ("numpy", "ndarray"): ("numpy", "ndarray"),
    ("numpy", "dtype"): ("numpy", "dtype"),
    ("numpy.core.multiarray", "_reconstruct"): ("numpy._core.multiarray", "_reconstruct"),
    ("numpy._core.multiarray", "_reconstruct"): ("numpy._core.multiarray", "_reconstruct"),
    ("scipy.sparse.csr", "csr_matrix"): ("scipy.sparse", "csr_matrix"),
    ("scipy.sparse._csr", "csr_matrix"): ("scipy.sparse", "csr_matrix"),
    ("collections", "defaultdict"): ("collections", "defaultdict"),
    ("__builtin__", "list"): ("builtins", "list"),
    ("builtins", "list"): ("builtins", "list"),
    ("_codecs", "encode"): ("_codecs", "encode"),  # how Python 3 writes bytes (array data) in protocol 2
}


class RefusedPickle(DataError):
    """A pickle named a global outside the format's."""


class PlanetoidUnpickler(pickle.Unpickler):
    """Resolves only ALLOWED_GLOBALS; anything else ends the load before it is called."""

    def __init__(self, file, source: str) -> None:
        super().__init__(file, encoding="latin1")  # Python 2 pickles of numpy arrays
        self.source = source

    def find_class(self, module: str, name: str):
        target = ALLOWED_GLOBALS.get((module, name))
        if target is None:
            raise RefusedPickle(
                f"{self.source}: refused: the pickle names {module}.{name}, which the Planetoid format does not "
                "use (a crafted file can run code through it); only numpy arrays, scipy CSR matrices and "
                "adjacency lists are read"
            )
        import importlib

        return getattr(importlib.import_module(target[0]), target[1])

    def persistent_load(self, pid):
        raise RefusedPickle(f"{self.source}: refused: the pickle asks for a persistent object ({pid!r})")


def safe_unpickle(data: bytes, source: str):
    """The object in `data`, unpickled through PlanetoidUnpickler."""
    try:
        return PlanetoidUnpickler(io.BytesIO(data), source).load()
    except RefusedPickle:
        raise
    except Exception as err:  # truncated or not a pickle at all
        raise DataError(f"{source}: not a readable Planetoid file ({type(err).__name__}: {err})") from None


def raw_dir(root: Path, name: str) -> Path:
    """`root/<Name>/raw`, also when `root` is already the dataset's directory or its raw directory."""
    root = Path(root)
    for candidate in (root / name / "raw", root / "raw", root):
        if (candidate / f"ind.{name.lower()}.x").is_file():
            return candidate
    raise DataError(
        f"{root}: no Planetoid files of {name} (expected {root / name / 'raw'}/ind.{name.lower()}.x and the rest of "
        f"{', '.join(FILES)}); nothing is downloaded"
    )


def _dense(matrix, source: str) -> np.ndarray:
    import scipy.sparse as sp

    if sp.issparse(matrix):
        matrix = matrix.toarray()
    array = np.asarray(matrix)
    if array.ndim != 2 or not np.issubdtype(array.dtype, np.number):
        raise DataError(f"{source}: expected a 2-d numeric matrix, found {array.dtype} of shape {array.shape}")
    return array


def read_planetoid(root: Path, name: str) -> dict[str, np.ndarray]:
    """x (N, F) float32, y (N,) int64 (-1: no label), edge_index (2, E) int64 and the public split's
    train/val/test masks (N,) bool."""
    directory = raw_dir(root, name)
    prefix = f"ind.{name.lower()}"
    loaded = {}
    for part in FILES[:-1]:
        path = directory / f"{prefix}.{part}"
        if not path.is_file():
            raise DataError(f"{path}: missing (a Planetoid dataset has {', '.join(FILES)})")
        loaded[part] = safe_unpickle(path.read_bytes(), str(path))
    index_path = directory / f"{prefix}.test.index"
    try:
        test_index = np.array([int(line) for line in index_path.read_text().split()], dtype=np.int64)
    except FileNotFoundError:
        raise DataError(f"{index_path}: missing") from None
    except ValueError as err:
        raise DataError(f"{index_path}: not one node index per line ({err})") from None

    x_train, tx, allx = (_dense(loaded[k], str(directory / f"{prefix}.{k}")) for k in ("x", "tx", "allx"))
    y_train, ty, ally = (_dense(loaded[k], str(directory / f"{prefix}.{k}")) for k in ("y", "ty", "ally"))
    if len(tx) != len(test_index) or len(ty) != len(test_index):
        raise DataError(f"{index_path}: {len(test_index)} test indices for {len(tx)} rows of tx and {len(ty)} of ty")
    sorted_index = np.sort(test_index)
    if name.lower() == "citeseer":  # test indices without features: zero rows, no label
        span = sorted_index[-1] - sorted_index[0] + 1
        tx_full = np.zeros((span, tx.shape[1]), dtype=tx.dtype)
        ty_full = np.zeros((span, ty.shape[1]), dtype=ty.dtype)
        tx_full[sorted_index - sorted_index[0]] = tx
        ty_full[sorted_index - sorted_index[0]] = ty
        tx, ty = tx_full, ty_full
    x = np.concatenate([allx, tx]).astype(np.float32)
    labels = np.concatenate([ally, ty])
    y = np.where(labels.sum(1) > 0, labels.argmax(1), -1).astype(np.int64)
    x[test_index], y[test_index] = x[sorted_index], y[sorted_index]
    n = len(x)
    if test_index.min() < 0 or test_index.max() >= n:
        raise DataError(f"{index_path}: node indices outside 0..{n - 1}")

    graph = loaded["graph"]
    if not isinstance(graph, dict):
        raise DataError(f"{directory / (prefix + '.graph')}: expected an adjacency dict, found {type(graph).__name__}")
    try:
        rows = np.fromiter((int(node) for node, nbrs in graph.items() for _ in nbrs), dtype=np.int64)
        cols = np.fromiter((int(nbr) for nbrs in graph.values() for nbr in nbrs), dtype=np.int64)
    except (TypeError, ValueError) as err:
        raise DataError(f"{directory / (prefix + '.graph')}: adjacency lists of non-integers ({err})") from None
    edge_index = symmetric_edges(np.stack([rows, cols]), n, str(directory / f"{prefix}.graph"))

    masks = {name_: np.zeros(n, dtype=bool) for name_ in ("train", "val", "test")}
    masks["train"][: len(y_train)] = True
    masks["val"][len(y_train) : len(y_train) + PUBLIC_VALIDATION] = True
    masks["test"][test_index] = True
    return {"x": x, "y": y, "edge_index": edge_index, **{f"{k}_mask": v for k, v in masks.items()}}


def symmetric_edges(edge_index: np.ndarray, num_nodes: int, source: str) -> np.ndarray:
    """Both directions of every edge, without self-loops and duplicates, sorted by (source, target)."""
    if edge_index.size and (edge_index.min() < 0 or edge_index.max() >= num_nodes):
        bad = int(np.flatnonzero((edge_index < 0).any(0) | (edge_index >= num_nodes).any(0))[0])
        raise DataError(f"{source}: edge {bad} joins {edge_index[:, bad].tolist()}, outside nodes 0..{num_nodes - 1}")
    both = np.concatenate([edge_index, edge_index[::-1]], axis=1)
    both = both[:, both[0] != both[1]]
    keys = np.unique(both[0] * num_nodes + both[1])
    return np.stack([keys // num_nodes, keys % num_nodes]).astype(np.int64)
