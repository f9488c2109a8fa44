"""check_params: every key of params.yaml validated before any stage runs.

DVC removes a stage's outputs before it runs the stage's command, so a check inside a stage comes
after the loss. This stage tracks the whole params file and every other stage depends on the marker
it writes: `dvc repro` runs it first whenever the file changes, and an invalid file (a typo, an
unknown key, a value out of range, a duplicate key) stops the run before anything is removed. The
marker's content never changes, so a valid edit reruns only the stages whose own params changed.

Params are checked here against the data too, read from its labels and header alone
(kdcore.data.sources.data_header), since the stages that use them run after DVC has removed their
outputs: class names (`transfer.exclude_classes`), split sizes (`data.splits`, split as `prepare`
splits them), and settings the kind of data rules out (shifts and cutmix of (N, D) vectors).

And against the models, built on the meta device (names, shapes and layer types, no memory): weights
files given in params (their safetensors header: names and shapes, not the tensors), an ONNX
teacher (loaded and run on one sample), the layers feature terms name, the BatchNorm layers that
inversion matches, the output layer an omitted class's bias correction raises, a teacher subset too
small for one batch, and the device.
"""

from __future__ import annotations

import torch

from kdcore.artifacts import write_json
from kdcore.config import Params
from kdcore.data.sources import DataHeader, data_header
from kdcore.data.splits import published_test_rows, split_rows
from kdcore.errors import ConfigError, DataError
from kdcore.losses.compose import Objective
from kdcore.models import InputShape, check_weights_file, meta_model, require_file
from kdcore.omitted import output_layer
from kdcore.runtime import resolve_device
from kdcore.transfer.pool import excluded_indices

MARKER = "params_ok.json"


def check_against_data(params: Params) -> DataHeader:
    """The checks of params that need the data: the classes params name, the split sizes, the views."""
    cfg = params.data
    header = data_header(cfg.source, cfg.path, cfg.image_size, cfg.channels)
    if params.transfer.exclude_classes:
        excluded_indices(header.class_names, params.transfer.exclude_classes)
        if params.distill.omitted_bias == "auto" and not cfg.splits.validation:
            raise ConfigError(
                "distill.omitted_bias: auto chooses the omitted classes' bias on the validation split, but "
                "data.splits.validation is 0: give it samples, or set the bias (e.g. 3.5) or off"
            )
    topk = params.transfer.cache_topk
    if topk is not None and topk > len(header.class_names):
        raise ConfigError(
            f"transfer.cache_topk: {topk} is more than the data's {len(header.class_names)} classes; "
            f"use at most {len(header.class_names)} (all classes, fp16), or null for the exact float32 cache"
        )
    where = f"data.path {cfg.path}" if cfg.path else f"data.source {cfg.source}"
    published = published_test_rows(header, cfg.published_test, where)
    split_rows(header.labels, cfg.splits.model_dump(), params.seed, published)
    params.check_for_kind(header.kind)
    return header


def check_onnx_teacher(name: str, path, input_shape: InputShape, num_classes: int) -> None:
    """An ONNX teacher loads, takes one input of the data's shape and gives finite logits, one per class."""
    from kdcore.models.onnx import OnnxModel

    model = OnnxModel(require_file(path, f"teachers.{name}.onnx model"))
    logits = model(torch.zeros(1, *input_shape))
    if tuple(logits.shape) != (1, num_classes):
        raise DataError(
            f"teachers.{name}.onnx: {path} gives outputs of shape {tuple(logits.shape)} for one sample of shape "
            f"{tuple(input_shape)}; expected (1, {num_classes}) for the data's {num_classes} classes"
        )
    if not bool(torch.isfinite(logits).all()):
        raise DataError(f"teachers.{name}.onnx: {path} gives outputs that are not finite (NaN or inf)")


def check_against_models(params: Params, header: DataHeader) -> None:
    """The checks of params that need the architectures, built on the meta device."""
    device = resolve_device(params.device)
    gpus = torch.cuda.device_count() if device.type == "cuda" else 0
    if device.type == "cuda" and params.distributed.nproc_per_node > gpus:
        raise ConfigError(
            f"distributed.nproc_per_node: {params.distributed.nproc_per_node} processes, one per GPU, but this "
            f"machine has {gpus} GPU(s)"
        )
    if header.input_shape is None:
        return  # only decoding the data tells the shape: prepare checks it, the stages check the rest
    shape, classes = header.input_shape, len(header.class_names)
    teachers = {}
    for name, cfg in params.teachers.items():
        if cfg.origin == "onnx":
            check_onnx_teacher(name, cfg.onnx, shape, classes)
            continue
        teachers[name] = model = meta_model(cfg.model, shape, classes)
        if getattr(cfg.model, "weights", None) is not None:
            check_weights_file(cfg.model.weights, model, cfg.model.name, f"teachers.{name}.model.weights")
        if cfg.pretrained is not None:
            check_weights_file(cfg.pretrained, model, cfg.model.name, f"teachers.{name}.pretrained")
        if cfg.train is not None:
            samples = max(1, round(cfg.subset * params.data.splits.teacher_train))
            if samples < min(cfg.train.batch_size, params.data.splits.teacher_train):
                raise ConfigError(
                    f"teachers.{name}.subset: {cfg.subset} of the {params.data.splits.teacher_train}-sample teacher "
                    f"split is {samples} sample(s), fewer than one batch (teachers.{name}.train.batch_size "
                    f"{cfg.train.batch_size})"
                )
    student = meta_model(params.student.model, shape, classes)
    if getattr(params.student.model, "weights", None) is not None:
        check_weights_file(params.student.model.weights, student, params.student.model.name, "student.model.weights")
    if params.transfer.exclude_classes and params.distill.omitted_bias != "off":
        output_layer(student, classes)
    objective = Objective([t.model_dump(mode="json") for t in params.distill.terms], params.distill.temperature)
    if objective.needs_teacher_features:
        objective.check_layers(student, teachers[objective.feature_teacher or next(iter(params.teachers))])
    synth = params.synth
    if params.transfer.source != "real" and synth.method in ("inversion", "generator") and synth.bn_weight > 0:
        from kdcore.synth.priors import BatchNormStats

        BatchNormStats(teachers[params.synth_teacher()], f"synth.method={synth.method}").remove()


def check_graph(params: Params) -> None:
    """Graph data: the graph reads, splits and passes its structural checks; the models build for its
    features and classes, with their pretrained weights."""
    from kdcore.graph.pipeline import input_shape, read_graph

    cfg = params.data
    graph = read_graph(cfg.source, cfg.path, cfg.name, cfg.graph, params.seed)
    shape, classes = input_shape(graph), graph.num_classes
    for name, cfg in params.teachers.items():
        model = meta_model(cfg.model, shape, classes)
        if cfg.pretrained is not None:
            check_weights_file(cfg.pretrained, model, cfg.model.name, f"teachers.{name}.pretrained")
    meta_model(params.student.model, shape, classes)
    if params.lifelong.increments:
        raise ConfigError("lifelong.increments: lifelong updates run on image and vector data; leave it empty")


def check(params: Params) -> None:
    """Everything about params that can be decided before a stage runs (load_params checked the rest)."""
    if params.data.is_graph:
        check_graph(params)
        return
    check_against_models(params, check_against_data(params))


def run(params: Params) -> None:
    # reaching here means load_params accepted the file; the marker holds nothing that varies
    check(params)
    write_json(params.paths.work / MARKER, {"params": "valid"})
    print(f"check_params: params valid -> {params.paths.work / MARKER}")
