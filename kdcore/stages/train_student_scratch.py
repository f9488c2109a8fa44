"""train_student_scratch: the baseline. The same student, views and budget, hard labels only.

It learns from the real transfer split (and the teacher's split with transfer.include_teacher_train),
after the same class filters as the distilled student's transfer set (transfer.exclude_classes,
transfer.max_per_class: a class the distilled student never sees, the baseline never sees either),
shifted as build_transfer shifts it (transfer.views, transfer.shift), whatever transfer.source is, so
the baseline stays the same when the distilled student's source of images changes. It reads the
prepared splits, never build_transfer's outputs.
"""

from __future__ import annotations

from kdcore import distributed
from kdcore.artifacts import replaced_together
from kdcore.checkpoint import save_model_dir, training_checkpoint
from kdcore.config import Params
from kdcore.data.prepared import load_meta, load_split, take
from kdcore.evaluate.measured import write_training_time
from kdcore.losses import LOSSES
from kdcore.models import count_params
from kdcore.runtime import resolve_device
from kdcore.training import ViewSet, train_student
from kdcore.transfer.pool import class_filter, excluded_indices, real_transfer_images
from kdcore.transfer.views import ViewCrop, make_views

# what it reads of params.transfer
SCRATCH_TRANSFER_KEYS = ("views", "shift", "include_teacher_train", "labeled", "exclude_classes", "max_per_class")


def run(params: Params) -> None:
    if params.data.is_graph:  # kdcore/graph/pipeline.py: the labelled nodes alone
        from kdcore.graph import pipeline

        graph, _ = pipeline.prepared_graph(params.paths.prepared)
        pipeline.train_and_save(
            graph, params.student.model, params.student.train, pipeline.labelled_targets(graph), pipeline.CE, 1.0,
            seed=params.seed, patience=params.data.graph.patience, fanouts=params.data.graph.fanouts,
            key="student_scratch", model_out=params.paths.student_scratch,
            live_out=params.paths.live / "student_scratch", metrics=params.paths.metrics, config={},
        )  # fmt: skip
        return
    cfg, student, paths = params.transfer, params.student, params.paths
    prepared = load_meta(paths.prepared)
    test = load_split(paths.prepared, "test")
    images, labels, true = real_transfer_images(paths.prepared, cfg.include_teacher_train, cfg.labeled)
    if cfg.exclude_classes or cfg.max_per_class:
        keep = class_filter(
            true, excluded_indices(prepared.meta["class_names"], cfg.exclude_classes), cfg.max_per_class
        )
        images, labels = take(images, keep), labels[keep]
    made = make_views(len(images), cfg.views, cfg.shift, params.seed, crop=cfg.crop_for(prepared.input_shape))
    labeled = labels[made.src] >= 0  # only views whose sample carries a label: nothing else to learn from
    crop = ViewCrop(made.crop.crop[labeled], made.crop.flip[labeled]) if made.crop is not None else None
    views = ViewSet(
        images, made.src[labeled], made.dx[labeled], made.dy[labeled], labels[made.src][labeled], prepared.fill,
        crop=crop,
    )  # fmt: skip
    config = {"loss": "ce"}
    samples = int((labels >= 0).sum())  # the labelled real images it learns from
    checkpoint = training_checkpoint(
        paths.work, "train_student_scratch", params.seed, student, config, prepared.meta["sha256"], len(views)
    )
    # the model and its git-tracked training logs are replaced together, or neither is (a full disk)
    live = paths.live / "student_scratch"
    with distributed.outputs(replaced_together, paths.student_scratch, live) as (model_dir, live_dir):
        model, history = train_student(
            student.model,
            student.train,
            views,
            LOSSES.get("ce"),
            input_shape=prepared.input_shape,
            num_classes=prepared.num_classes,
            test=test,
            seed=params.seed,
            device=resolve_device(params.device),
            checkpoint=checkpoint,
            live_dir=live_dir,
            desc="student_scratch",
            workers=params.data.workers,
        )
        if not distributed.is_writer():
            return  # rank 0 writes
        write_training_time(paths.metrics, "student_scratch", [history])
        transfer = {k: v for k, v in cfg.model_dump(mode="json").items() if k in SCRATCH_TRANSFER_KEYS}
        save_model_dir(
            model_dir, model, student.model, prepared.input_shape, prepared.num_classes, seed=params.seed,
            config={"student": student.model_dump(mode="json"), "transfer": transfer, **config, "samples": samples},
        )  # fmt: skip
    checkpoint.clear()
    print(
        f"train_student_scratch: {student.model.name}, {count_params(model):,} parameters, {len(views)} views "
        f"-> {paths.student_scratch}"
    )
    print(f"train_student_scratch: eval accuracy {history[-1]['eval/accuracy']:.4f}")
