"""The graph side of export, quantize, evaluate and update, as functions of explicit arguments (the stage
modules call them): the MLP students as ONNX files, fp32 and int8, scored in onnxruntime; every model on the
test nodes; and what classifying unseen nodes costs, measured as GLNN does (Zhang et al. 2022, section 5.4): a
GNN gathers their neighbourhood from the whole graph, an MLP reads their features. Data-free synthesis, the
student search, born-again generations and lifelong increments are image and vector methods: check_params
refuses their settings on graphs, and the update stage records that none ran.
"""

from __future__ import annotations

import time
from pathlib import Path

import torch

from kdcore.artifacts import atomic_dir, load_tensors, read_json, write_json, write_text
from kdcore.checkpoint import load_model_dir, weights_file
from kdcore.graph.data import Graph
from kdcore.graph.models import needs_edges
from kdcore.graph.pipeline import POOL_FILE, eval_mask, input_shape
from kdcore.graph.train import accuracy, node_logits
from kdcore.models import count_params

LATENCY_BATCH = 1000  # unseen nodes per request, as GLNN times inference


def latency_nodes(graph: Graph, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    """A request of one and one of LATENCY_BATCH unseen nodes (the evaluation nodes, repeated if fewer)."""
    nodes = torch.nonzero(eval_mask(graph)).flatten()
    order = nodes[torch.randperm(len(nodes), generator=torch.Generator().manual_seed(seed))]
    batch = order[torch.arange(LATENCY_BATCH) % len(order)]
    return batch[:1], batch


def export_students(
    graph: Graph,
    students: dict[str, Path],
    transfer: Path,
    out: Path,
    metrics: Path,
    cfg,
    threads: int,
    repeats: int,
    seed: int,
) -> None:
    """The MLP students (name -> model directory) as ONNX files, int8 too when `cfg` (an ExportConfig) says,
    scored in onnxruntime on the test nodes and timed on unseen nodes; a GNN student ships with its graph."""
    from kdcore.graph.serve import features_latency_ms
    from kdcore.models.onnx import OnnxModel
    from kdcore.quantize.onnx_export import export_onnx, quantize_int8

    test = eval_mask(graph)
    pool = load_tensors(Path(transfer) / POOL_FILE)["nodes"]
    calibration = graph.x[pool[: cfg.calibration_samples]].reshape(-1, *input_shape(graph))
    one, batch = latency_nodes(graph, seed)
    rows, timings = {}, {}
    with atomic_dir(out) as tmp:
        for key, model_dir in students.items():
            model, _ = load_model_dir(model_dir)
            if needs_edges(model):
                print(f"export: {key} is a GNN; it ships with its graph, in PyTorch (no ONNX file)")
                continue
            files = {"onnx": tmp / key / "model.onnx"}
            export_onnx(model, input_shape(graph), files["onnx"])
            if cfg.int8:
                files["onnx_int8"] = tmp / key / "model_int8.onnx"
                quantize_int8(files["onnx"], files["onnx_int8"], calibration, cfg.per_channel, cfg.reduce_range)
            previous = torch.get_num_threads()
            torch.set_num_threads(threads)
            try:
                for suffix, path in files.items():
                    shipped = OnnxModel(path)
                    logits = shipped(graph.x.reshape(graph.num_nodes, *input_shape(graph)))
                    name = f"{key}_{suffix}"
                    rows[name] = {"accuracy": round(accuracy(logits, graph.y, test), 6),
                                  "size_bytes": path.stat().st_size, "params": count_params(model)}  # fmt: skip
                    times = [features_latency_ms(shipped, graph, nodes, repeats, threads) for nodes in (one, batch)]
                    timings[name] = {"latency_ms_b1": round(times[0], 4),
                                     f"latency_ms_b{LATENCY_BATCH}": round(times[1], 4)}  # fmt: skip
                    print(f"export: {name}: test accuracy {rows[name]['accuracy']:.4f} in onnxruntime, "
                          f"{rows[name]['size_bytes']:,} bytes -> {path.relative_to(tmp)}")  # fmt: skip
            finally:
                torch.set_num_threads(previous)
    write_json(Path(metrics) / "export.json", rows)
    write_json(Path(metrics) / "timings" / "export.json", timings)


def no_quantized_files(out: Path, metrics: Path) -> None:
    """On graph data the int8 student is export's ONNX QDQ file; the torchao paths are for image students."""
    with atomic_dir(out) as tmp:
        reason = "graph data: the int8 student is export's model_int8.onnx"
        write_json(tmp / "summary.json", {"kind": "graph", "files": [], "reason": reason})
    write_json(Path(metrics) / "quantize.json", {})
    write_json(Path(metrics) / "timings" / "quantize.json", {})
    print("quantize: graph data: the int8 student is export's ONNX file (metrics/export.json)")


def evaluate_graph(
    graph: Graph,
    meta: dict,
    model_dirs: dict[str, Path],
    live_runs: dict[str, Path],
    paths,
    ensemble,
    ece_bins: int,
    threads: int,
    repeats: int,
    seed: int,
    about: dict,
) -> None:
    """Every model (name -> directory: `teacher_<name>`, `student_scratch`, `student_kd`) on the test nodes, with
    the teachers' ensemble (an EnsembleConfig) when there are several; the metrics, plots, report and latency
    page that the evaluate stage declares, under `paths` (the Paths section). `about` describes the run."""
    from kdcore.evaluate.metrics import quality_metrics
    from kdcore.evaluate.plots import (
        confusion_matrix,
        per_class_accuracy,
        save_confusion_png,
        save_curves_png,
        save_per_class_png,
    )
    from kdcore.graph.serve import NeighbourIndex, features_latency_ms, gnn_latency_ms
    from kdcore.transfer.ensemble import combine_logits

    started = time.perf_counter()
    test = eval_mask(graph)
    y = graph.y[test]
    models = {name: load_model_dir(directory)[0] for name, directory in model_dirs.items()}
    logits = {name: node_logits(model, graph) for name, model in models.items()}  # the whole graph at test time
    teacher_names = [n for n in model_dirs if n.startswith("teacher_")]
    if len(teacher_names) > 1:
        logits["teacher_ensemble"] = combine_logits(torch.stack([logits[n] for n in teacher_names]), ensemble.method,
                                                    ensemble.weights, ensemble.tau)  # fmt: skip
    teacher = "teacher_ensemble" if len(teacher_names) > 1 else teacher_names[0]
    teacher_pred = logits[teacher][test].argmax(1)
    summary = {}
    for name, lg in logits.items():
        row = quality_metrics(lg[test], y, teacher_pred, ece_bins)
        if name in models:
            row.update(params=count_params(models[name]), size_bytes=weights_file(model_dirs[name]).stat().st_size)
        summary[name] = {k: round(float(v), 6) for k, v in row.items()}
    exported_rows = paths.metrics / "export.json"
    deployed = read_json(exported_rows) if exported_rows.is_file() else {}
    summary.update(deployed)
    write_json(paths.metrics / "summary.json", summary)

    names = graph.class_names
    per_class = {n: [round(float(a), 6) for a in per_class_accuracy(y, logits[n][test].argmax(1), graph.num_classes)]
                 for n in (teacher, "student_scratch", "student_kd")}  # fmt: skip
    write_json(paths.metrics / "per_class.json", {"classes": names, **per_class})
    matrix = confusion_matrix(y, logits["student_kd"][test].argmax(1), graph.num_classes)
    predicted = logits["student_kd"][test].argmax(1).tolist()
    lines = ["actual,predicted"] + [f"{names[a]},{names[p]}" for a, p in zip(y.tolist(), predicted, strict=True)]
    write_text(paths.plots / "confusion.csv", "\n".join(lines) + "\n")
    save_confusion_png(paths.plots / "confusion.png",
                       {"distilled student": matrix, "teacher": confusion_matrix(y, teacher_pred, graph.num_classes)},
                       names)  # fmt: skip
    save_curves_png(paths.plots / "training_curves.png", live_runs, ["val/accuracy", "loss"])
    save_per_class_png(paths.plots / "per_class_accuracy.png", per_class, names)

    one, batch = latency_nodes(graph, seed)
    latency, index = {}, NeighbourIndex(graph.edge_index, graph.num_nodes)
    for name, model in models.items():
        if needs_edges(model):
            times = [gnn_latency_ms(model, graph, nodes, repeats, threads, index) for nodes in (one, batch)]
        else:
            times = [features_latency_ms(model, graph, nodes, repeats, threads) for nodes in (one, batch)]
        latency[name] = {"latency_ms_b1": round(times[0], 4), f"latency_ms_b{LATENCY_BATCH}": round(times[1], 4)}
    exported = paths.metrics / "timings" / "export.json"
    if exported.is_file():
        latency.update(read_json(exported))
    write_json(paths.metrics / "timings" / "evaluate.json",
               {"seconds": round(time.perf_counter() - started, 2), "latency": latency})  # fmt: skip
    write_text(paths.reports / "latency.md", render_latency(latency, threads, repeats))
    write_text(paths.reports / "report.md", render_report(summary, meta, about))
    kd, scratch = summary["student_kd"]["accuracy"], summary["student_scratch"]["accuracy"]
    where = meta.get("name") or about["data"]
    print(f"evaluate: {where}, {meta['setting']}: teacher {summary[teacher]['accuracy']:.4f}, "
          f"distilled student {kd:.4f}, scratch student {scratch:.4f} on {int(test.sum())} test nodes")  # fmt: skip


def render_report(summary: dict, meta: dict, about: dict) -> str:
    """`about`: data (where it came from), teachers, student, terms (described), temperature."""
    rows = ["| model | test accuracy | NLL | ECE | agreement with the teacher | parameters | file |",
            "|---|---:|---:|---:|---:|---:|---:|"]  # fmt: skip
    for name, r in summary.items():
        if "nll" not in r:
            rows.append(f"| {name} | {r['accuracy'] * 100:.2f}% | | | | {r.get('params', 0):,} | "
                        f"{r.get('size_bytes', 0):,} B |")  # fmt: skip
            continue
        cost = f"{r.get('params', 0):,} | {r.get('size_bytes', 0):,} B"
        rows.append(f"| {name} | {r['accuracy'] * 100:.2f}% | {r['nll']:.4f} | {r['ece']:.4f} | "
                    f"{r['agreement'] * 100:.2f}% | {cost} |")  # fmt: skip
    sizes = meta["sizes"]
    where = meta.get("name") or about["data"]
    held = " (held out of training with their edges)" if meta["setting"] == "inductive" else ""
    teachers, terms = about["teachers"], about["terms"]
    return "\n".join([
        "# kdflow report: graph data",
        "",
        f"{where}: {sizes['nodes']:,} nodes, {sizes['edges']:,} directed edges, {meta['num_classes']} classes; "
        f"{meta['split']} split, {meta['setting']} setting: {sizes['teacher_train']} labelled, "
        f"{sizes['validation']} validation, {sizes['test']} test nodes{held}. Teachers: {teachers}; student: "
        f"{about['student']}, distilled with {terms} at T={about['temperature']:g} on "
        f"{sizes['transfer']} transfer nodes.",
        "",
        *rows,
        "",
        "Latency: [latency.md](latency.md).",
        "",
    ])  # fmt: skip


def render_latency(latency: dict, threads: int, repeats: int) -> str:
    rows = [f"| model | batch 1 | batch {LATENCY_BATCH:,} |", "|---|---:|---:|"]
    for name, r in latency.items():
        rows.append(f"| {name} | {r['latency_ms_b1']:.3f} ms | {r[f'latency_ms_b{LATENCY_BATCH}']:.3f} ms |")
    return "\n".join([
        "# Latency: classifying unseen nodes",
        "",
        f"{threads} thread(s), the lowest of 3 medians of {repeats} "
        "calls. A GNN gathers the nodes' neighbourhood (as many hops as it has layers) from the whole graph and runs "
        "on it in PyTorch; an MLP reads the nodes' features (in PyTorch, and as its ONNX files in onnxruntime: "
        "`_onnx`, `_onnx_int8`). Measured: these figures move between identical runs.",
        "",
        *rows,
        "",
    ])  # fmt: skip


def no_updates(updates: Path, metrics: Path, plots: Path) -> None:
    """Lifelong increments are image and vector data; on a graph the update stage records that none ran."""
    from kdcore.evaluate.plots import save_accuracy_matrix_png

    with atomic_dir(updates) as tmp:
        write_json(tmp / "summary.json", {"kind": "graph", "increments": []})
    write_json(Path(metrics) / "lifelong.json", {"increments": [], "learned": 0,
                                                        "reason": "graph data: no lifelong increments"})  # fmt: skip
    save_accuracy_matrix_png(Path(plots) / "lifelong_matrix.png", [[float("nan")]], ["graph"],
                             "graph data: no lifelong increments")  # fmt: skip
    print("update: graph data: no lifelong increments")
