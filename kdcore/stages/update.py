"""update: the distilled student learns the accepted increments (lifelong.increments), in order.

The stream is the student's own data first (the transfer split, scored on the test split: the
increment it already knows) and then every accepted increment under paths.increments. Each update
is lifelong.method with lifelong.steps optimisation steps (kdcore/lifelong/). The whole chain is
recomputed from the distilled student, so the result of any commit follows from its params and
data alone. Writes paths.updates/<i>-<name>/ (the student after each increment), the exemplar
memory, metrics/lifelong.json (the accuracy matrix, ACC, BWT, forgetting, the gate's verdict) and
plots/lifelong_matrix.png.
"""

from __future__ import annotations

import shutil

from kdcore.artifacts import save_tensors, write_json
from kdcore.checkpoint import load_model_dir, save_model_dir
from kdcore.config import Params
from kdcore.data.prepared import load_meta, load_split
from kdcore.errors import ConfigError
from kdcore.evaluate.plots import save_accuracy_matrix_png
from kdcore.gate import check_update_gate
from kdcore.lifelong.increments import load_increment
from kdcore.lifelong.methods import UPDATES, UpdateSettings
from kdcore.lifelong.run import run_stream
from kdcore.lifelong.scenarios import Increment
from kdcore.models import build_model

BASE = "base"


def settings_of(params: Params) -> UpdateSettings:
    cfg = params.lifelong
    keys = UpdateSettings.__dataclass_fields__
    return UpdateSettings(**{k: v for k, v in cfg.model_dump().items() if k in keys})


def base_increment(params: Params) -> Increment:
    """What the distilled student learned from (its real transfer split), scored on the test split."""
    prepared = params.paths.prepared
    train = load_split(prepared, "transfer")
    test = load_split(prepared, "test")
    classes = tuple(sorted(set(train.y.tolist()) | set(test.y.tolist())))
    return Increment(BASE, train.x, train.y, test.x, test.y, classes, 0)


def run(params: Params) -> None:
    if params.data.is_graph:  # lifelong increments are image and vector data
        from kdcore.graph import deploy

        return deploy.no_updates(params.paths.updates, params.paths.metrics, params.paths.plots)
    cfg = params.lifelong
    meta = load_meta(params.paths.prepared)
    student, _ = load_model_dir(params.paths.student_kd)
    teacher = None
    if UPDATES.get(cfg.method).teacher:
        name = next(iter(params.teachers))
        if params.teachers[name].origin == "onnx":
            raise ConfigError(f"lifelong.method=teacher fine-tunes teacher {name!r}, an ONNX model it cannot train")
        teacher, _ = load_model_dir(params.paths.teachers / name)
    stream = [base_increment(params)] + [
        load_increment(params.paths.increments, n, i + 1) for i, n in enumerate(cfg.increments)
    ]
    names = [inc.name for inc in stream]
    spec = params.student.model

    def make_student():
        return build_model(spec, meta.input_shape, meta.num_classes)

    result = run_stream(
        stream,
        cfg.method,
        settings_of(params),
        mode=cfg.scenario,
        num_classes=meta.num_classes,
        make_student=make_student,
        seed=params.seed,
        memory=cfg.memory,
        selection=cfg.selection,
        start=(student, teacher),
        keep_models=True,
        log=lambda line: print(f"update: {line}", flush=True),
    )
    out = params.paths.updates
    staging = out.with_name(f".{out.name}.partial")  # written whole, then renamed: never half an output
    if staging.exists():
        shutil.rmtree(staging)
    for i, (increment, model) in enumerate(zip(stream, result.models, strict=True)):
        if i == 0:
            continue
        made_by = {"lifelong": cfg.model_dump(mode="json"), "increments": names[1 : i + 1]}
        save_model_dir(
            staging / f"{i:03d}-{increment.name}", model, spec, meta.input_shape, meta.num_classes,
            seed=params.seed, config=made_by,
        )  # fmt: skip
    staging.mkdir(parents=True, exist_ok=True)
    save_tensors(staging / "memory.safetensors", result.memory.tensors())
    if out.exists():
        shutil.rmtree(out)
    staging.rename(out)
    gate = check_update_gate(result.matrix, names, cfg.gate.max_drop, cfg.gate.min_newest)
    metrics = {
        "scenario": cfg.scenario,
        "method": cfg.method,
        "increments": names,
        "learned": len(names) - 1,
        **{k: round(v, 6) for k, v in result.metrics.items()},
        "matrix": [[round(a, 6) for a in row] for row in result.matrix],
        "memory": {str(k): v for k, v in sorted(result.memory.class_counts().items())},
        "gate": {"passed": gate.passed, "message": gate.message},
        "seconds_per_update": [round(s, 2) for s in result.seconds[1:]],
    }
    write_json(params.paths.metrics / "lifelong.json", metrics)
    save_accuracy_matrix_png(
        params.paths.plots / "lifelong_matrix.png",
        result.matrix,
        names,
        f"{cfg.method} ({cfg.scenario}): ACC {result.metrics['acc']:.3f}, "
        f"forgetting {result.metrics['forgetting']:.3f}",
    )
    print(
        f"update: {len(names) - 1} increment(s) learned with {cfg.method}: ACC {result.metrics['acc']:.4f}, "
        f"forgetting {result.metrics['forgetting']:.4f}; {gate.message}; -> {out}"
    )
