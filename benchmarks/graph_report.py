"""reports/graph.md from reports/graph.csv and graph_meta.json (benchmarks/graph.py makes them;
`python benchmarks/graph.py --report-only` remakes the page)."""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd

from kdcore.artifacts import write_text


def summary(rows: pd.DataFrame) -> pd.DataFrame:
    grouped = rows.groupby(["dataset", "setting", "model", "role"], sort=False)
    table = grouped.agg(seeds=("seed", "count"), acc=("accuracy", "mean"), sd=("accuracy", "std"),
                        latency=("latency_ms", "median"), latency_b1=("latency_ms_b1", "median"))  # fmt: skip
    return table.reset_index()


def write_report(reports: Path) -> None:
    rows = pd.read_csv(reports / "graph.csv")
    meta_path = reports / "graph_meta.json"
    meta = json.loads(meta_path.read_text()) if meta_path.is_file() else {}
    table = summary(rows)
    lines = [
        "# Graph-less distillation: GNN teachers, MLP students",
        "",
        "Made by `python benchmarks/graph.py --root <planetoid root>` (rows in `reports/graph.csv`, one per model "
        "and seed). The data's public split; in the inductive setting 20% of the test nodes are held out of "
        "training with every edge that touches one, and accuracy is on those nodes. Students' settings were chosen "
        "on the validation nodes over other seeds (below); test accuracy is the mean ± standard deviation over "
        "the seeds. Latency: one thread of a 2-core machine, to classify unseen nodes: the GNN gathers their "
        "2-hop neighbourhood through an index of each node's neighbours (built once, untimed) and runs in PyTorch, "
        "the MLP runs as its ONNX file in onnxruntime on their features.",
        "",
    ]
    if rows["model"].str.startswith("sage sampled").any():
        lines += ["`sage sampled A-B`: GraphSAGE trained on mini-batches with at most A and B sampled neighbours per "
                  "hop (`--sampled`, data.graph.fanouts); it is served like `sage`.", ""]  # fmt: skip
    for (dataset, setting), part in table.groupby(["dataset", "setting"], sort=False):
        lines += [f"## {dataset}, {setting}", "",
                  "| model | role | seeds | test accuracy | latency, 1,000 nodes | latency, 1 node |",
                  "|---|---|---:|---:|---:|---:|"]  # fmt: skip
        for r in part.itertuples():
            lat = f"{r.latency:.3f} ms" if pd.notna(r.latency) else "-"
            lat1 = f"{r.latency_b1:.3f} ms" if pd.notna(r.latency_b1) else "-"
            accuracy = f"{r.acc * 100:.2f}% ± {r.sd * 100:.2f}" if pd.notna(r.acc) else "-"
            lines.append(f"| {r.model} | {r.role} | {r.seeds} | {accuracy} | {lat} | {lat1} |")
        lines += ["", "Targets:", ""]
        acc = dict(zip(part["model"], part["acc"], strict=True))
        lat = dict(zip(part["model"], part["latency"], strict=True))
        lat1 = dict(zip(part["model"], part["latency_b1"], strict=True))
        scratch = acc.get("mlp", float("nan"))
        if setting == "latency only":
            scale = meta.get("scaling", {})
            if scale.get("dataset") == dataset:
                lines[-2:-2] = [
                    f"Untrained models (latency does not depend on the weights): {scale['nodes']:,} nodes, "
                    f"{scale['edges']:,} directed edges, {scale['features']} features, an MLP of hidden width "
                    f"{scale['hidden']}. The 2-hop neighbourhood a GNN gathers holds {scale['gathered_1000']:,} "
                    f"nodes for a batch of 1,000 and {scale['gathered_1']:,} for 1 node.", "",
                ]  # fmt: skip
            for kind in ("sage", "gcn"):
                for mlp in ("mlp", "mlp int8"):
                    if kind in lat and mlp in lat:
                        ratio, ratio1 = lat[kind] / lat[mlp], lat1[kind] / lat1[mlp]
                        lines.append(f"- {kind} with neighbour gathering against the {mlp}: {ratio:.0f}x at 1,000 "
                                     f"nodes (target: 100x: {'met' if ratio >= 100 else 'missed'}), {ratio1:.0f}x "
                                     "at 1 node.")  # fmt: skip
            lines.append("")
            continue
        for kind in ("sage", "gcn"):
            student = acc.get(f"mlp<-{kind}")
            if student is None:
                continue
            gap = (student - acc[kind]) * 100
            gain = (student - scratch) * 100
            lines.append(
                f"- MLP distilled from {kind}: {student * 100:.2f}%, {gap:+.2f} points against its teacher "
                f"(target: within 1: {'met' if gap >= -1 else 'missed'}), {gain:+.2f} over the scratch MLP "
                f"(target: +15: {'met' if gain >= 15 else 'missed'})"
                + (
                    f"; at least 80% transductive: {'met' if student >= 0.80 else 'missed'}"
                    if setting == "transductive"
                    else ""
                )  # fmt: skip
                + "."
            )
            for runtime in ("", " int8"):
                mlp = f"mlp<-{kind}{runtime}"
                if mlp in lat and pd.notna(lat[mlp]):
                    ratio, ratio1 = lat[kind] / lat[mlp], lat1[kind] / lat1[mlp]
                    lines.append(
                        f"- Latency, {kind} with neighbour gathering against the {runtime.strip() or 'fp32'} MLP: "
                        f"{ratio:.0f}x at 1,000 nodes (target: 100x: {'met' if ratio >= 100 else 'missed'}), "
                        f"{ratio1:.0f}x at 1 node."
                    )
        chosen = meta.get(f"{dataset}/{setting}", {})
        if chosen:
            lines += ["", f"Students' settings, chosen on validation accuracy over seeds {chosen['choice_seeds']}:", ""]
            for role, c in chosen["chosen"].items():
                ce = "-" if c["ce"] is None else f"{c['ce']:g}"
                lines.append(f"- {role}: hidden {c['hidden']}, weight decay {c['weight_decay']:g}, CE weight {ce} "
                             f"(validation {c['val_accuracy'] * 100:.2f}%)")  # fmt: skip
        lines.append("")
    write_text(reports / "graph.md", "\n".join(lines))
    print(f"graph_report: -> {reports / 'graph.md'}")
