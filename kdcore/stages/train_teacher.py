"""train_teacher: train one teacher (or each, one after another) on the teacher split with hard labels,
or take a teacher trained elsewhere (`pretrained` weights or an `onnx` model) as it is: checked against
the data's shape and classes, evaluated on the test split, stored where trained teachers are.

Each teacher has its own architecture, seed (added to the global seed), share of the teacher split
and online shifts. `dvc repro` runs `train_teacher@<name>` per teacher; the Prefect flow can run
them side by side.
"""

from __future__ import annotations

import shutil
from pathlib import Path

import torch
from safetensors.torch import load_file
from torch import nn

from kdcore import distributed
from kdcore.artifacts import replaced_together, save_with, sha256_file, write_json
from kdcore.checkpoint import META, ONNX, save_model_dir, training_checkpoint
from kdcore.config import Params, TeacherConfig
from kdcore.data.prepared import load_meta, load_split, take
from kdcore.errors import ConfigError, DataError
from kdcore.evaluate.measured import write_training_time
from kdcore.inference import predict_logits
from kdcore.losses import LOSSES
from kdcore.models import build_model, check_weights_file, count_params, require_file
from kdcore.models.onnx import OnnxModel
from kdcore.runtime import resolve_device, seed_everything
from kdcore.training import ImageSet, fit


def subset_index(n: int, fraction: float, seed: int) -> torch.Tensor:
    """A random `fraction` of range(n) (at least one sample), drawn by `seed`, in ascending order."""
    keep = max(1, round(fraction * n))
    return torch.randperm(n, generator=torch.Generator().manual_seed(seed))[:keep].sort().values


def train_one(params: Params, name: str) -> None:
    prepared = load_meta(params.paths.prepared)
    params.check_for_kind(prepared.meta.get("kind", "image"))
    train, test = load_split(params.paths.prepared, "teacher_train"), load_split(params.paths.prepared, "test")
    cfg = params.teachers[name]
    seed = params.teacher_seed(name)
    x, y = train.x, train.y
    if cfg.subset < 1.0:
        index = subset_index(len(y), cfg.subset, seed)
        x, y = take(x, index), y[index]
    seed_everything(seed)
    model = build_model(cfg.model, prepared.input_shape, prepared.num_classes)
    checkpoint = training_checkpoint(
        params.paths.work, f"train_teacher@{name}", params.seed, seed, cfg, prepared.meta["sha256"]
    )
    out = params.paths.teachers / name
    # the model and its git-tracked training logs are replaced together, or neither is (a full disk)
    live = params.paths.live / "teachers" / name
    with distributed.outputs(replaced_together, out, live) as (model_dir, live_dir):
        history = fit(
            model,
            ImageSet(x, y, prepared.fill, shift=cfg.train.shift),
            LOSSES.get("ce"),
            cfg.train,
            seed=seed,
            device=resolve_device(params.device),
            checkpoint=checkpoint,
            live_dir=live_dir,
            eval_set=(test.x, test.y),
            desc=f"teacher {name}",
            workers=params.data.workers,
        )
        if not distributed.is_writer():
            return  # rank 0 writes
        write_training_time(params.paths.metrics, f"teacher_{name}", [history])
        save_model_dir(
            model_dir,
            model.cpu(),
            cfg.model,
            prepared.input_shape,
            prepared.num_classes,
            seed=seed,
            config={"teacher": name, **cfg.model_dump(mode="json"), "train_samples": len(y)},
        )
    checkpoint.clear()
    print(
        f"teacher {name}: {cfg.model.name}, {count_params(model):,} parameters, {len(y)} samples, "
        f"eval accuracy {history[-1]['eval/accuracy']:.4f} after {cfg.train.epochs} epochs -> {out}"
    )


def load_pretrained(cfg: TeacherConfig, name: str, input_shape: tuple[int, int, int], num_classes: int) -> nn.Module:
    """The teacher's architecture with its weights from `cfg.pretrained`; one-line errors for a file that
    is missing, not safetensors, or made for another architecture."""
    what = f"teachers.{name}.pretrained"
    model = build_model(cfg.model, input_shape, num_classes)
    check_weights_file(cfg.pretrained, model, cfg.model.name, what)
    path = Path(cfg.pretrained)
    state = load_file(str(path))
    broken = [k for k, t in state.items() if t.is_floating_point() and not bool(torch.isfinite(t).all())]
    if broken:
        raise DataError(
            f"{what}: {path} holds values that are not finite (NaN or inf) in "
            f"{', '.join(broken[:3])}{' ...' if len(broken) > 3 else ''}; a teacher must give finite outputs"
        )
    model.load_state_dict(state)
    return model.eval()


def use_as_is(params: Params, name: str) -> None:
    """A teacher trained elsewhere: checked on the data's shape, evaluated, stored as the pipeline's teacher."""
    prepared = load_meta(params.paths.prepared)
    test = load_split(params.paths.prepared, "test")
    cfg = params.teachers[name]
    out = params.paths.teachers / name
    if cfg.origin == "onnx":
        source = require_file(cfg.onnx, f"teachers.{name}.onnx model")
        model: nn.Module = OnnxModel(source)
    else:
        source = cfg.pretrained
        model = load_pretrained(cfg, name, prepared.input_shape, prepared.num_classes)
    logits = predict_logits(model, test.x)
    if logits.shape != (len(test.y), prepared.num_classes):
        raise DataError(
            f"teachers.{name}: {source} gives outputs of shape {tuple(logits.shape)} on the test split; "
            f"expected ({len(test.y)}, {prepared.num_classes}) for {prepared.num_classes} classes"
        )
    if not bool(torch.isfinite(logits).all()):
        rows = (~torch.isfinite(logits)).any(1).nonzero().flatten()
        raise DataError(
            f"teachers.{name}: {source} gives outputs that are not finite (NaN or inf) on {len(rows)} of "
            f"{len(test.y)} test samples (first at row {int(rows[0])}); a teacher must give finite outputs"
        )
    accuracy = float((logits.argmax(1) == test.y).float().mean())
    config = {"teacher": name, "origin": cfg.origin, "source": str(source), "source_sha256": sha256_file(source)}
    with replaced_together(out, params.paths.live / "teachers" / name) as (model_dir, live_dir):
        model_dir.mkdir(parents=True)
        if cfg.origin == "onnx":
            save_with(model_dir / ONNX, lambda tmp: shutil.copyfile(source, tmp))
            write_json(
                model_dir / META,
                {"spec": None, "input_shape": list(prepared.input_shape), "num_classes": prepared.num_classes,
                 "seed": None, "config": config},
            )  # fmt: skip
        else:
            save_model_dir(
                model_dir, model, cfg.model, prepared.input_shape, prepared.num_classes, seed=None, config=config
            )
        log_evaluation(live_dir, accuracy)
    write_training_time(params.paths.metrics, f"teacher_{name}", [])  # not trained here
    print(
        f"teacher {name}: trained elsewhere ({cfg.origin}, {source}), {count_params(model):,} parameters, "
        f"used as it is; test accuracy {accuracy:.4f} -> {out}"
    )


def log_evaluation(live_dir: Path, accuracy: float) -> None:
    """The dvclive record of a teacher that was not trained here: its test accuracy, one step."""
    from dvclive import Live

    live = Live(dir=str(live_dir), save_dvc_exp=False, dvcyaml=None, report=None)
    live.log_metric("eval/accuracy", accuracy)
    live.next_step()
    live.end()


def train_graph_teachers(params: Params, names: list[str]) -> None:
    """Graph data (kdcore/graph/pipeline.py): each teacher trained on the training graph, or taken as it is."""
    from kdcore.graph import pipeline
    from kdcore.graph.train import accuracy, node_logits

    graph, _ = pipeline.prepared_graph(params.paths.prepared)
    for name in names:
        cfg = params.teachers[name]
        out, live = params.paths.teachers / name, params.paths.live / "teachers" / name
        if cfg.origin == "train":
            pipeline.train_and_save(
                graph, cfg.model, cfg.train, pipeline.labelled_targets(graph), pipeline.CE, 1.0,
                seed=params.teacher_seed(name), patience=params.data.graph.patience,
                fanouts=params.data.graph.fanouts, key=f"teacher_{name}",
                model_out=out, live_out=live, metrics=params.paths.metrics, config={"teacher": name},
            )  # fmt: skip
            continue
        model = load_pretrained(cfg, name, pipeline.input_shape(graph), graph.num_classes)
        val = accuracy(node_logits(model, graph), graph.y, graph.mask("val"))
        with replaced_together(out, live) as (model_dir, live_dir):
            save_model_dir(model_dir, model, cfg.model, pipeline.input_shape(graph), graph.num_classes, seed=None,
                           config={"teacher": name, "origin": "pretrained", "source": str(cfg.pretrained)})  # fmt: skip
            pipeline.log_history(live_dir, [{"val/accuracy": val}])
        write_training_time(params.paths.metrics, f"teacher_{name}", [])
        print(f"teacher {name}: trained elsewhere ({cfg.pretrained}), validation accuracy {val:.4f} -> {out}")


def run(params: Params, teacher: str | None = None) -> None:
    if teacher is not None and teacher not in params.teachers:
        raise ConfigError(f"--teacher {teacher!r}: not in params teachers ({', '.join(params.teachers)})")
    if params.data.is_graph:
        return train_graph_teachers(params, [teacher] if teacher is not None else list(params.teachers))
    for name in [teacher] if teacher is not None else list(params.teachers):
        if params.teachers[name].origin == "train":
            train_one(params, name)
        else:
            use_as_is(params, name)
