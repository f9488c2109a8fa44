"""distill: train the student on the transfer views against the teacher's cached logits.

The loss is the weighted sum in distill.terms (kdcore/losses/compose.py). Feature terms read the
named layers of one teacher, computed once over all views before training. With
distill.generations = G > 1 the run is born-again distillation (Furlanello et al. 2018): generation
g + 1, a fresh student of the same architecture, learns from generation g's logits on the views,
and the last generation is the distilled student. Self-distillation is a student of the teacher's
own architecture with G >= 2. Reverse KD (a small trained model teaching a larger one; Yuan et al.
2020, "Revisiting Knowledge Distillation via Label Smoothing Regularization") is the same stage with
the small model listed under `teachers` and the larger one as the student.

With classes left out of the transfer set (`transfer.exclude_classes`), the omitted classes' output
bias is raised after training by a bias chosen on the validation split (kdcore/omitted.py), and the
corrected student ships only if it is better there; model.json records both.
"""

from __future__ import annotations

from pathlib import Path

import torch
from torch import nn

from kdcore import distributed
from kdcore.artifacts import replaced_together
from kdcore.checkpoint import load_model_dir, save_model_dir, training_checkpoint
from kdcore.config import Params
from kdcore.data.prepared import PreparedData, load_meta, load_split
from kdcore.evaluate.measured import write_training_time
from kdcore.inference import predict_logits
from kdcore.losses.compose import Objective
from kdcore.models import build_model, count_params
from kdcore.omitted import BiasChoice, accuracy, apply_bias, choose_bias, shifted
from kdcore.runtime import resolve_device
from kdcore.training import train_student
from kdcore.transfer.pool import SYNTHETIC_FILE, excluded_indices, load_view_set
from kdcore.transfer.views import teacher_logits_on_views

GENERATION_SEED_STEP = 1_000  # generation g trains with seed + (g - 1) * this: a new init and order


def run(params: Params) -> None:
    cfg, student, paths = params.distill, params.student, params.paths
    if params.data.is_graph:  # kdcore/graph/pipeline.py: ce on the labelled nodes, the rest on the transfer nodes
        from kdcore.graph import pipeline

        graph, _ = pipeline.prepared_graph(params.paths.prepared)
        pipeline.train_and_save(
            graph, student.model, student.train, pipeline.distill_targets(graph, paths.transfer),
            [t.model_dump(mode="json") for t in cfg.terms], cfg.temperature, seed=params.seed,
            patience=params.data.graph.patience, fanouts=params.data.graph.fanouts, key="student_kd",
            model_out=paths.student_kd, live_out=paths.live / "student_kd", metrics=paths.metrics,
            config={"distill": cfg.model_dump(mode="json")},
        )  # fmt: skip
        return
    device = resolve_device(params.device)
    prepared = load_meta(paths.prepared)
    test = load_split(paths.prepared, "test")
    views, pool = load_view_set(paths.transfer, paths.prepared, paths.synthetic / SYNTHETIC_FILE, cfg.topk_rest)
    objective = Objective([t.model_dump(mode="json") for t in cfg.terms], cfg.temperature)
    prepare = None
    if objective.needs_teacher_features:
        name = objective.feature_teacher or next(iter(params.teachers))
        teacher, _ = load_model_dir(paths.teachers / name, device)
        probe = build_model(student.model, prepared.input_shape, prepared.num_classes)
        objective.check_layers(probe, teacher)
        views.extras = objective.teacher_targets(teacher, views.x, views.views, views.fill, device)
        print(f"distill: features of teacher {name!r} on {len(views)} views ({', '.join(views.extras)})")

        def prepare(model):
            return objective.attach(model, views.extras, views.x[:2])

    config = {"distill": cfg.model_dump(mode="json")}
    generations = []
    histories = []
    checkpoints = []
    model = None
    # the model and its git-tracked training logs are replaced together, or neither is (a full disk)
    with distributed.outputs(replaced_together, paths.student_kd, paths.live / "student_kd") as (model_dir, live_dir):
        for g in range(1, cfg.generations + 1):
            if g > 1:
                views.teacher_logits = teacher_logits_on_views(model, views.x, views.views, views.fill, device)
            last = g == cfg.generations
            stage = "distill" if g == 1 else f"distill_gen{g}"
            seed = params.seed + (g - 1) * GENERATION_SEED_STEP
            run_config = {**config, "generation": g}
            checkpoints.append(
                training_checkpoint(paths.work, stage, seed, student, run_config, prepared.meta["sha256"], len(views))
            )
            model, history = train_student(
                student.model,
                student.train,
                views,
                objective,
                input_shape=prepared.input_shape,
                num_classes=prepared.num_classes,
                test=test,
                seed=seed,
                device=device,
                checkpoint=checkpoints[-1],
                live_dir=live_dir if last else None,
                desc="student_kd" if last else stage,
                prepare=prepare,
                workers=params.data.workers,
            )
            objective.detach()
            histories.append(history)
            accuracy = history[-1]["eval/accuracy"]
            generations.append({"generation": g, "eval_accuracy": accuracy})
            if cfg.generations > 1:
                print(f"distill: generation {g} of {cfg.generations}: eval accuracy {accuracy:.4f}")
        if not distributed.is_writer():
            return  # rank 0 writes
        write_training_time(paths.metrics, "student_kd", histories)
        correction = correct_omitted(
            model, prepared, paths.prepared, pool.settings.get("exclude_classes", []), cfg.omitted_bias, device
        )
        made_by = {
            "student": student.model_dump(mode="json"),
            "transfer": pool.settings,
            **config,
            "generations": generations,
            **({"omitted_bias": correction.as_dict()} if correction else {}),
        }
        save_model_dir(
            model_dir, model, student.model, prepared.input_shape, prepared.num_classes, seed=params.seed,
            config=made_by,
        )  # fmt: skip
    for checkpoint in checkpoints:
        checkpoint.clear()
    print(
        f"distill: {student.model.name}, {count_params(model):,} parameters, {len(views)} views -> {paths.student_kd}"
    )
    print(f"distill: eval accuracy {generations[-1]['eval_accuracy']:.4f}")


def correct_omitted(
    model: nn.Module,
    prepared: PreparedData,
    prepared_dir: Path,
    excluded: list[str],
    setting: str | float,
    device: torch.device,
) -> BiasChoice | None:
    """The omitted classes' bias correction (kdcore/omitted.py), applied to `model` in place when it
    ships; None when no class was left out or the correction is off."""
    if not excluded or setting == "off":
        return None
    omitted = excluded_indices(prepared.meta["class_names"], excluded)
    before = after = None
    if prepared.meta["sizes"].get("validation", 0):
        val = load_split(prepared_dir, "validation")
        logits = predict_logits(model, val.x, device).cpu()
    if setting == "auto":  # check_params made sure the validation split exists
        bias, before, after = choose_bias(logits, val.y, omitted)
        choice = BiasChoice(list(excluded), bias, "validation", before, after, shipped=after > before)
    else:
        bias = float(setting)
        if prepared.meta["sizes"].get("validation", 0):
            before, after = accuracy(logits, val.y), accuracy(shifted(logits, omitted, bias), val.y)
        choice = BiasChoice(list(excluded), bias, "params", before, after, shipped=True)
    if choice.shipped and bias:
        apply_bias(model, prepared.num_classes, omitted, bias)
    on_val = f"validation accuracy {before:.4f} -> {after:.4f}; " if before is not None else ""
    print(
        f"distill: omitted class {', '.join(excluded)}: output bias +{bias:g} (chosen on {choice.chosen_on}); "
        f"{on_val}{'shipped' if choice.shipped and bias else 'not shipped'}"
    )
    return choice
