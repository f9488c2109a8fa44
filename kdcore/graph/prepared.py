"""A prepared graph on disk: `graph.safetensors` (x, y, edge_index and the masks as uint8; no pickle) beside
the prepared data's `meta.json`, and the Great Expectations checks it passed.

The checks (kdcore/data/validate.py, the same machinery as the images'): on a table of nodes, features finite
and labels within the classes (-1 for none); on a table of edges, both ends within 0..N-1, no self-loop, no
pair listed twice; on the training nodes, every class present.
"""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import torch

from kdcore.artifacts import load_tensors, save_tensors
from kdcore.data.validate import Check
from kdcore.errors import DataError
from kdcore.graph.data import Graph

GRAPH_FILE = "graph.safetensors"


def save_graph(path: Path, graph: Graph) -> None:
    tensors = {"x": graph.x.contiguous(), "y": graph.y.contiguous(), "edge_index": graph.edge_index.contiguous()}
    tensors.update({f"mask_{k}": v.to(torch.uint8).contiguous() for k, v in graph.masks.items()})
    save_tensors(path, tensors, {"class_names": "\n".join(graph.class_names)})


def load_graph(path: Path) -> Graph:
    path = Path(path)
    if not path.is_file():
        raise DataError(f"{path}: missing; run the prepare stage first")
    tensors = load_tensors(path)
    from safetensors import safe_open

    with safe_open(str(path), framework="pt") as handle:
        names = (handle.metadata() or {}).get("class_names", "").split("\n")
    masks = {k.removeprefix("mask_"): v.bool() for k, v in tensors.items() if k.startswith("mask_")}
    return Graph(tensors["x"], tensors["y"], tensors["edge_index"], masks, names)


def graph_tables(graph: Graph) -> dict[str, tuple[pd.DataFrame, list[Check]]]:
    """The node, edge and training-node tables with their checks."""
    n, k = graph.num_nodes, graph.num_classes
    src, dst = graph.edge_index
    nodes = pd.DataFrame({
        "node": range(n),
        "label": graph.y.numpy(),
        "finite": torch.isfinite(graph.x).all(1).numpy(),
        "degree": torch.bincount(src, minlength=n).numpy(),
    })  # fmt: skip
    edges = pd.DataFrame({"source": src.numpy(), "target": dst.numpy(), "self_loop": (src == dst).numpy()})
    train = pd.DataFrame({"label": graph.y[graph.mask("train")].numpy()})
    return {
        "nodes": (nodes, [
            ("ExpectColumnValuesToBeInSet", {"column": "finite", "value_set": [True]}),
            ("ExpectColumnValuesToBeBetween", {"column": "label", "min_value": -1, "max_value": k - 1}),
            ("ExpectColumnValuesToBeUnique", {"column": "node"}),
        ]),
        "edges": (edges, [
            ("ExpectColumnValuesToBeBetween", {"column": "source", "min_value": 0, "max_value": n - 1}),
            ("ExpectColumnValuesToBeBetween", {"column": "target", "min_value": 0, "max_value": n - 1}),
            ("ExpectColumnValuesToBeInSet", {"column": "self_loop", "value_set": [False]}),
            ("ExpectCompoundColumnsToBeUnique", {"column_list": ["source", "target"]}),
        ]),
        "train_nodes": (train, [
            ("ExpectColumnDistinctValuesToContainSet", {"column": "label", "value_set": list(range(k))}),
        ]),
    }  # fmt: skip
