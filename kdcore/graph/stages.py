"""The pipeline's stages on graph data (data.source planetoid or graph_npz): the same DVC stages, each writing
the outputs dvc.yaml declares, with nodes in place of images.

- prepare: reads the graph (the Planetoid pickles through the restricted unpickler, or the user's .npz), splits
  its nodes, checks it with Great Expectations, writes `graph.safetensors` and `meta.json`, and one directory per
  split naming its nodes (teacher_train: the labelled training nodes; validation; test: the nodes accuracy is
  reported on, in the inductive setting the held-out ones; transfer: the nodes the students learn from);
- train_teacher@<name>: a GNN (or an MLP) on the training graph, CE on the labelled nodes, the epoch of best
  validation accuracy;
- build_transfer: the teachers' logits on the training graph (several teachers combined as for images);
- distill: the student (an MLP on node features, or a GNN) with distill.terms: `ce` on the labelled nodes,
  `kd` on the transfer nodes (every node of the training graph the teacher was not trained on);
- train_student_scratch: the same student on the labelled nodes alone;
- export: the MLP students as ONNX files, fp32 and int8, scored in onnxruntime;
- evaluate: every model on the test nodes; latency to classify unseen nodes as GLNN measures it (a GNN gathers
  their neighbourhood from the whole graph; an MLP reads their features).
Data-free synthesis, the student search, born-again generations and lifelong increments are image and vector
methods; check_params refuses their settings on graph data, and their stages write what no run leaves.
"""

from __future__ import annotations

import time
from pathlib import Path

import torch

from kdcore.artifacts import atomic_dir, read_json, replaced_together, save_tensors, sha256_file, write_json, write_text
from kdcore.checkpoint import load_model_dir, save_model_dir, weights_file
from kdcore.config import Params
from kdcore.data.validate import validate_or_fail
from kdcore.errors import DataError
from kdcore.evaluate.measured import write_training_time
from kdcore.graph.data import Graph, build_graph, read_npz_graph
from kdcore.graph.models import needs_edges
from kdcore.graph.prepared import GRAPH_FILE, graph_tables, load_graph, save_graph
from kdcore.graph.train import NodeTargets, accuracy, node_logits, train_nodes
from kdcore.models import build_model, count_params
from kdcore.runtime import seed_everything

SOFT_FILE = "graph_soft.safetensors"
SPLIT_DIRS = {"teacher_train": "train", "validation": "val", "test": "test", "transfer": "transfer"}
LATENCY_BATCH = 1000  # unseen nodes per request, as GLNN times inference


def is_graph(params: Params) -> bool:
    return params.data.is_graph


def eval_mask(graph: Graph) -> torch.Tensor:
    """The nodes accuracy is reported on: the test nodes; in the inductive setting the held-out ones."""
    held = graph.mask("held_out")
    return graph.mask("test") & held if bool(held.any()) else graph.mask("test")


def transfer_mask(observed: Graph) -> torch.Tensor:
    """Every node of the training graph the teacher was not trained on."""
    return ~observed.mask("train")


def input_shape(graph: Graph) -> tuple[int, int, int]:
    return (int(graph.x.shape[1]), 1, 1)


# --- prepare ---------------------------------------------------------------------------------------------------


def read_source(params: Params) -> tuple[dict, list[str] | None, str]:
    cfg = params.data
    if cfg.source == "planetoid":
        from kdcore.graph.planetoid import read_planetoid

        return read_planetoid(cfg.path, cfg.name), None, f"{cfg.path} ({cfg.name})"
    return read_npz_graph(cfg.path), None, str(cfg.path)


def load_params_graph(params: Params) -> Graph:
    """The graph params.yaml names, split and checked (one line on a defect): what prepare writes."""
    arrays, names, where = read_source(params)
    g = params.data.graph
    return build_graph(
        arrays, names, split=g.split, setting=g.setting, seed=params.seed, train_per_class=g.train_per_class,
        validation=g.validation, test=g.test, held_out=g.held_out, normalize_features=g.normalize_features,
        source=where,
    )  # fmt: skip


def prepare(params: Params) -> None:
    paths = params.paths
    graph = load_params_graph(params)
    report = paths.reports / "validation" / "prepare.html"
    outcomes = validate_or_fail(graph_tables(graph), "prepare", report)  # before the prepared data is replaced
    observed, ids = graph.observed()
    nodes = {
        "teacher_train": torch.nonzero(graph.mask("train")).flatten(),
        "validation": torch.nonzero(graph.mask("val")).flatten(),
        "test": torch.nonzero(eval_mask(graph)).flatten(),
        "transfer": ids[transfer_mask(observed)],
    }
    with atomic_dir(paths.prepared) as tmp:
        save_graph(tmp / GRAPH_FILE, graph)
        for split, index in nodes.items():
            save_tensors(tmp / split / "nodes.safetensors", {"nodes": index.contiguous()})
        meta = {
            "kind": "graph",
            "source": params.data.source,
            "name": params.data.name,
            "input_shape": list(input_shape(graph)),
            "num_classes": graph.num_classes,
            "class_names": graph.class_names,
            "setting": params.data.graph.setting,
            "split": params.data.graph.split,
            "sizes": {"nodes": graph.num_nodes, "edges": int(graph.edge_index.shape[1]),
                      **{k: len(v) for k, v in nodes.items()}, "held_out": int(graph.mask("held_out").sum())},
            "sha256": sha256_file(tmp / GRAPH_FILE),
        }  # fmt: skip
        write_json(tmp / "meta.json", meta)
    print(
        f"prepare: {meta['sizes']['nodes']:,} nodes, {meta['sizes']['edges']:,} directed edges, "
        f"{graph.num_classes} classes, {graph.x.shape[1]} features; {params.data.graph.setting}: "
        f"{len(nodes['teacher_train'])} labelled, {len(nodes['validation'])} validation, {len(nodes['test'])} test, "
        f"{len(nodes['transfer'])} transfer nodes; {len(outcomes)} checks passed -> {paths.prepared}"
    )


def prepared_graph(params: Params) -> tuple[Graph, dict]:
    meta = read_json(Path(params.paths.prepared) / "meta.json")
    if meta.get("kind") != "graph":
        raise DataError(f"{params.paths.prepared}: prepared from image data; rerun prepare for data.source graphs")
    return load_graph(Path(params.paths.prepared) / GRAPH_FILE), meta


# --- training ----------------------------------------------------------------------------------------------------


def log_history(live_dir: Path, history: list[dict[str, float]]) -> None:
    """The per-epoch records as dvclive logs (seconds apart: they go to metrics/timings/)."""
    from dvclive import Live

    live = Live(dir=str(live_dir), save_dvc_exp=False, dvcyaml=None, report=None)
    for record in history:
        for name, value in record.items():
            if name not in ("epoch", "seconds"):
                live.log_metric(name, value)
        live.next_step()
    live.end()


def train_model(params: Params, spec, train_cfg, graph: Graph, targets_for, terms, temperature, seed: int, desc: str):
    observed, ids = graph.observed()
    seed_everything(seed)
    model = build_model(spec, input_shape(graph), graph.num_classes)
    model, history = train_nodes(
        model, observed, targets_for(observed, ids), terms, temperature, train_cfg, seed=seed,
        patience=params.data.graph.patience, desc=desc,
    )  # fmt: skip
    return model, history, observed


def train_teacher(params: Params, teacher: str | None = None) -> None:
    from kdcore.stages.train_teacher import load_pretrained

    graph, _ = prepared_graph(params)
    for name in [teacher] if teacher is not None else list(params.teachers):
        cfg = params.teachers[name]
        out, live = params.paths.teachers / name, params.paths.live / "teachers" / name
        with replaced_together(out, live) as (model_dir, live_dir):
            if cfg.origin == "pretrained":
                model = load_pretrained(cfg, name, input_shape(graph), graph.num_classes)
                history = []
                val = accuracy(node_logits(model, graph), graph.y, graph.mask("val"))
                log_history(live_dir, [{"val/accuracy": val}])
            else:
                seed = params.teacher_seed(name)
                model, history, _ = train_model(
                    params, cfg.model, cfg.train, graph, lambda o, _ids: NodeTargets(o.mask("train")),
                    [{"name": "ce", "weight": 1.0}], 1.0, seed, f"teacher {name}",
                )  # fmt: skip
                log_history(live_dir, history)
            write_training_time(params.paths.metrics, f"teacher_{name}", [history])
            save_model_dir(model_dir, model, cfg.model, input_shape(graph), graph.num_classes,
                           seed=params.teacher_seed(name),
                           config={"teacher": name, "origin": cfg.origin, "epochs": len(history)})  # fmt: skip
        val = accuracy(node_logits(model, graph), graph.y, graph.mask("val"))
        print(f"teacher {name}: {cfg.model.name}, {count_params(model):,} parameters, "
              f"{int(graph.mask('train').sum())} labelled nodes, validation accuracy {val:.4f} -> {out}")  # fmt: skip


def build_transfer(params: Params) -> None:
    from kdcore.transfer.ensemble import combine_logits

    graph, _ = prepared_graph(params)
    observed, ids = graph.observed()
    logits = []
    for name in params.teachers:
        model, _ = load_model_dir(params.paths.teachers / name)
        logits.append(node_logits(model, observed))
    ensemble = params.transfer.ensemble
    soft = logits[0] if len(logits) == 1 else combine_logits(
        torch.stack(logits), ensemble.method, ensemble.weights, ensemble.tau
    )  # fmt: skip
    transfer = transfer_mask(observed)
    import pandas as pd

    probs = soft.softmax(1)
    table = pd.DataFrame({"finite": torch.isfinite(soft).all(1).numpy(), "top": probs.max(1).values.numpy(),
                          "sum": probs.sum(1).numpy()})  # fmt: skip
    checks = [("ExpectColumnValuesToBeInSet", {"column": "finite", "value_set": [True]}),
              ("ExpectColumnValuesToBeBetween", {"column": "top", "min_value": 0.0, "max_value": 1.0}),
              ("ExpectColumnValuesToBeBetween", {"column": "sum", "min_value": 0.999, "max_value": 1.001})]  # fmt: skip
    validate_or_fail({"soft_labels": (table, checks)}, "build_transfer",
                     params.paths.reports / "validation" / "build_transfer.html")  # fmt: skip
    agreement = {name: accuracy(lg, soft.argmax(1), transfer) for name, lg in zip(params.teachers, logits, strict=True)}
    with atomic_dir(params.paths.transfer) as tmp:
        save_tensors(tmp / SOFT_FILE, {"teacher_logits": soft.contiguous(), "ids": ids.contiguous(),
                                       "transfer": transfer.to(torch.uint8).contiguous()})  # fmt: skip
        save_tensors(tmp / "pool.safetensors", {"nodes": ids[transfer].contiguous()})
        summary = {"kind": "graph", "teachers": list(params.teachers), "ensemble": ensemble.method,
                   "transfer_nodes": int(transfer.sum()), "training_graph_nodes": observed.num_nodes,
                   "teacher_agreement_with_soft_labels": {k: round(v, 6) for k, v in agreement.items()}}  # fmt: skip
        write_json(tmp / "summary.json", summary)
    print(f"build_transfer: soft labels of {', '.join(params.teachers)} on {int(transfer.sum())} transfer nodes "
          f"of the {observed.num_nodes}-node training graph -> {params.paths.transfer}")  # fmt: skip


def train_student(params: Params, distilled: bool) -> None:
    graph, _ = prepared_graph(params)
    student = params.student
    if distilled:
        soft = load_tensors_checked(params.paths.transfer / SOFT_FILE)
        terms = [t.model_dump(mode="json") for t in params.distill.terms]

        def targets_for(observed: Graph, _ids) -> NodeTargets:
            return NodeTargets(observed.mask("train"), soft["transfer"].bool(), soft["teacher_logits"])

        temperature, key, out = params.distill.temperature, "student_kd", params.paths.student_kd
    else:
        terms, temperature = [{"name": "ce", "weight": 1.0}], 1.0
        key, out = "student_scratch", params.paths.student_scratch

        def targets_for(observed: Graph, _ids) -> NodeTargets:
            return NodeTargets(observed.mask("train"))

    with replaced_together(out, params.paths.live / key) as (model_dir, live_dir):
        model, history, _ = train_model(params, student.model, student.train, graph, targets_for, terms, temperature,
                                        params.seed, key)  # fmt: skip
        log_history(live_dir, history)
        write_training_time(params.paths.metrics, key, [history])
        config = {"distill": params.distill.model_dump(mode="json")} if distilled else {}
        save_model_dir(model_dir, model, student.model, input_shape(graph), graph.num_classes, seed=params.seed,
                       config={**config, "epochs": len(history)})  # fmt: skip
    val = accuracy(node_logits(model, graph), graph.y, graph.mask("val"))
    print(f"{key}: {student.model.name}, {count_params(model):,} parameters, best validation accuracy {val:.4f} "
          f"after {len(history)} epochs -> {out}")  # fmt: skip


def load_tensors_checked(path: Path) -> dict[str, torch.Tensor]:
    from kdcore.artifacts import load_tensors

    if not Path(path).is_file():
        raise DataError(f"{path}: missing; run build_transfer first")
    return load_tensors(path)


# --- export, evaluate ------------------------------------------------------------------------------------------


def latency_nodes(graph: Graph, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    """A request of one and one of LATENCY_BATCH unseen nodes (the evaluation nodes, repeated if fewer)."""
    nodes = torch.nonzero(eval_mask(graph)).flatten()
    order = nodes[torch.randperm(len(nodes), generator=torch.Generator().manual_seed(seed))]
    batch = order[torch.arange(LATENCY_BATCH) % len(order)]
    return batch[:1], batch


def export(params: Params) -> None:
    from kdcore.graph.serve import features_latency_ms
    from kdcore.models.onnx import OnnxModel
    from kdcore.quantize.onnx_export import export_onnx, quantize_int8

    graph, _ = prepared_graph(params)
    test = eval_mask(graph)
    pool = load_tensors_checked(params.paths.transfer / "pool.safetensors")["nodes"]
    calibration = graph.x[pool[: params.export.calibration_samples]].reshape(-1, *input_shape(graph))
    one, batch = latency_nodes(graph, params.seed)
    rows, timings = {}, {}
    threads, repeats = params.evaluate.latency_threads, params.evaluate.latency_repeats
    with atomic_dir(params.paths.exported) as tmp:
        students = {"student_kd": params.paths.student_kd, "student_scratch": params.paths.student_scratch}
        for key, model_dir in students.items():
            model, _ = load_model_dir(model_dir)
            if needs_edges(model):
                print(f"export: {key} is a GNN; it ships with its graph, in PyTorch (no ONNX file)")
                continue
            files = {"onnx": tmp / key / "model.onnx"}
            export_onnx(model, input_shape(graph), files["onnx"])
            if params.export.int8:
                files["onnx_int8"] = tmp / key / "model_int8.onnx"
                quantize_int8(files["onnx"], files["onnx_int8"], calibration, params.export.per_channel,
                              params.export.reduce_range)  # fmt: skip
            previous = torch.get_num_threads()
            torch.set_num_threads(threads)
            try:
                for suffix, path in files.items():
                    shipped = OnnxModel(path)
                    logits = shipped(graph.x.reshape(graph.num_nodes, *input_shape(graph)))
                    name = f"{key}_{suffix}"
                    rows[name] = {"accuracy": round(accuracy(logits, graph.y, test), 6),
                                  "size_bytes": path.stat().st_size, "params": count_params(model)}  # fmt: skip
                    timings[name] = {
                        "latency_ms_b1": round(features_latency_ms(shipped, graph, one, repeats, threads), 4),
                        f"latency_ms_b{LATENCY_BATCH}": round(features_latency_ms(shipped, graph, batch, repeats,
                                                                                  threads), 4),
                    }  # fmt: skip
                    print(f"export: {name}: test accuracy {rows[name]['accuracy']:.4f} in onnxruntime, "
                          f"{rows[name]['size_bytes']:,} bytes -> {path.relative_to(tmp)}")  # fmt: skip
            finally:
                torch.set_num_threads(previous)
    write_json(params.paths.metrics / "export.json", rows)
    write_json(params.paths.metrics / "timings" / "export.json", timings)


def quantize(params: Params) -> None:
    """On graph data the int8 student is export's ONNX QDQ file; the torchao paths are for image students."""
    with atomic_dir(params.paths.quantized) as tmp:
        reason = "graph data: the int8 student is export's model_int8.onnx"
        write_json(tmp / "summary.json", {"kind": "graph", "files": [], "reason": reason})
    write_json(params.paths.metrics / "quantize.json", {})
    write_json(params.paths.metrics / "timings" / "quantize.json", {})
    print("quantize: graph data: the int8 student is export's ONNX file (metrics/export.json)")


def evaluate(params: Params) -> None:
    from kdcore.evaluate.metrics import quality_metrics
    from kdcore.evaluate.plots import (
        confusion_matrix,
        per_class_accuracy,
        save_confusion_png,
        save_curves_png,
        save_per_class_png,
    )
    from kdcore.graph.serve import features_latency_ms, gnn_latency_ms
    from kdcore.transfer.ensemble import combine_logits

    started = time.perf_counter()
    graph, meta = prepared_graph(params)
    test = eval_mask(graph)
    y = graph.y[test]
    models = {f"teacher_{name}": load_model_dir(params.paths.teachers / name)[0] for name in params.teachers}
    models["student_scratch"] = load_model_dir(params.paths.student_scratch)[0]
    models["student_kd"] = load_model_dir(params.paths.student_kd)[0]
    logits = {name: node_logits(model, graph) for name, model in models.items()}  # the whole graph at test time
    teacher_names = [f"teacher_{n}" for n in params.teachers]
    if len(teacher_names) > 1:
        e = params.transfer.ensemble
        logits["teacher_ensemble"] = combine_logits(torch.stack([logits[n] for n in teacher_names]), e.method,
                                                    e.weights, e.tau)  # fmt: skip
    teacher = "teacher_ensemble" if len(teacher_names) > 1 else teacher_names[0]
    teacher_pred = logits[teacher][test].argmax(1)
    dirs = {f"teacher_{n}": params.paths.teachers / n for n in params.teachers}
    dirs.update(student_scratch=params.paths.student_scratch, student_kd=params.paths.student_kd)
    summary = {}
    for name, lg in logits.items():
        row = quality_metrics(lg[test], y, teacher_pred, params.evaluate.ece_bins)
        if name in models:
            row.update(params=count_params(models[name]), size_bytes=weights_file(dirs[name]).stat().st_size)
        summary[name] = {k: round(float(v), 6) for k, v in row.items()}
    exported_rows = params.paths.metrics / "export.json"
    deployed = read_json(exported_rows) if exported_rows.is_file() else {}
    summary.update(deployed)
    write_json(params.paths.metrics / "summary.json", summary)

    names = graph.class_names
    per_class = {n: [round(float(a), 6) for a in per_class_accuracy(y, logits[n][test].argmax(1), graph.num_classes)]
                 for n in (teacher, "student_scratch", "student_kd")}  # fmt: skip
    write_json(params.paths.metrics / "per_class.json", {"classes": names, **per_class})
    matrix = confusion_matrix(y, logits["student_kd"][test].argmax(1), graph.num_classes)
    predicted = logits["student_kd"][test].argmax(1).tolist()
    lines = ["actual,predicted"] + [f"{names[a]},{names[p]}" for a, p in zip(y.tolist(), predicted, strict=True)]
    write_text(params.paths.plots / "confusion.csv", "\n".join(lines) + "\n")
    save_confusion_png(params.paths.plots / "confusion.png",
                       {"distilled student": matrix, "teacher": confusion_matrix(y, teacher_pred, graph.num_classes)},
                       names)  # fmt: skip
    live = params.paths.live
    runs = {**{f"teacher {n}": live / "teachers" / n for n in params.teachers},
            "scratch student": live / "student_scratch", "distilled student": live / "student_kd"}  # fmt: skip
    save_curves_png(params.paths.plots / "training_curves.png", runs, ["val/accuracy", "loss"])
    save_per_class_png(params.paths.plots / "per_class_accuracy.png", per_class, names)

    one, batch = latency_nodes(graph, params.seed)
    threads, repeats = params.evaluate.latency_threads, params.evaluate.latency_repeats
    latency = {}
    for name, model in models.items():
        if needs_edges(model):
            times = [gnn_latency_ms(model, graph, nodes, repeats, threads) for nodes in (one, batch)]
        else:
            times = [features_latency_ms(model, graph, nodes, repeats, threads) for nodes in (one, batch)]
        latency[name] = {"latency_ms_b1": round(times[0], 4), f"latency_ms_b{LATENCY_BATCH}": round(times[1], 4)}
    exported = params.paths.metrics / "timings" / "export.json"
    if exported.is_file():
        latency.update(read_json(exported))
    write_json(params.paths.metrics / "timings" / "evaluate.json",
               {"seconds": round(time.perf_counter() - started, 2), "latency": latency})  # fmt: skip
    write_text(params.paths.reports / "latency.md", render_latency(latency, params, meta))
    write_text(params.paths.reports / "report.md", render_report(summary, params, meta))
    kd, scratch = summary["student_kd"]["accuracy"], summary["student_scratch"]["accuracy"]
    where = meta.get("name") or params.data.path
    print(f"evaluate: {where}, {meta['setting']}: teacher {summary[teacher]['accuracy']:.4f}, "
          f"distilled student {kd:.4f}, scratch student {scratch:.4f} on {int(test.sum())} test nodes")  # fmt: skip


def render_report(summary: dict, params: Params, meta: dict) -> str:
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
    where = meta.get("name") or params.data.path
    held = " (held out of training with their edges)" if meta["setting"] == "inductive" else ""
    teachers = ", ".join(f"{n} ({t.model.name})" for n, t in params.teachers.items())
    terms = " + ".join(f"{t.weight:g} {t.name}" for t in params.distill.terms)
    return "\n".join([
        "# kdflow report: graph data",
        "",
        f"{where}: {sizes['nodes']:,} nodes, {sizes['edges']:,} directed edges, {meta['num_classes']} classes; "
        f"{meta['split']} split, {meta['setting']} setting: {sizes['teacher_train']} labelled, "
        f"{sizes['validation']} validation, {sizes['test']} test nodes{held}. Teachers: {teachers}; student: "
        f"{params.student.model.name}, distilled with {terms} at T={params.distill.temperature:g} on "
        f"{sizes['transfer']} transfer nodes.",
        "",
        *rows,
        "",
        "Latency: [latency.md](latency.md).",
        "",
    ])  # fmt: skip


def render_latency(latency: dict, params: Params, meta: dict) -> str:
    rows = [f"| model | batch 1 | batch {LATENCY_BATCH:,} |", "|---|---:|---:|"]
    for name, r in latency.items():
        rows.append(f"| {name} | {r['latency_ms_b1']:.3f} ms | {r[f'latency_ms_b{LATENCY_BATCH}']:.3f} ms |")
    return "\n".join([
        "# Latency: classifying unseen nodes",
        "",
        f"{params.evaluate.latency_threads} thread(s), the lowest of 3 medians of {params.evaluate.latency_repeats} "
        "calls. A GNN gathers the nodes' neighbourhood (as many hops as it has layers) from the whole graph and runs "
        "on it in PyTorch; an MLP reads the nodes' features (in PyTorch, and as its ONNX files in onnxruntime: "
        "`_onnx`, `_onnx_int8`). Measured: these figures move between identical runs.",
        "",
        *rows,
        "",
    ])  # fmt: skip


def nothing_to_update(params: Params) -> None:
    """Lifelong increments are image and vector data; on a graph the update stage records that none ran."""
    from kdcore.evaluate.plots import save_accuracy_matrix_png

    with atomic_dir(params.paths.updates) as tmp:
        write_json(tmp / "summary.json", {"kind": "graph", "increments": []})
    write_json(params.paths.metrics / "lifelong.json", {"increments": [], "learned": 0,
                                                        "reason": "graph data: no lifelong increments"})  # fmt: skip
    save_accuracy_matrix_png(params.paths.plots / "lifelong_matrix.png", [[float("nan")]], ["graph"],
                             "graph data: no lifelong increments")  # fmt: skip
    print("update: graph data: no lifelong increments")
