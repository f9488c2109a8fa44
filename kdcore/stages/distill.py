"""distill: train the student on the transfer views against the teacher's cached logits.

The loss is the weighted sum in distill.terms (kdcore/losses/compose.py). Feature terms read the
named layers of one teacher, computed once over all views before training. With
distill.generations = G > 1 the run is born-again distillation (Furlanello et al. 2018): generation
g + 1, a fresh student of the same architecture, learns from generation g's logits on the views,
and the last generation is the distilled student. Self-distillation is a student of the teacher's
own architecture with G >= 2. Reverse KD (a small trained model teaching a larger one; Yuan et al.
2020, "Revisiting Knowledge Distillation via Label Smoothing Regularization") is the same stage with
the small model listed under `teachers` and the larger one as the student.
"""

from __future__ import annotations

from kdcore.checkpoint import load_model_dir
from kdcore.config import Params
from kdcore.data.prepared import load_meta
from kdcore.losses.compose import Objective
from kdcore.models import build_model
from kdcore.runtime import resolve_device
from kdcore.stages.common import write_training_time
from kdcore.stages.student import load_views, save_student, train_student
from kdcore.transfer.views import teacher_logits_on_views

GENERATION_SEED_STEP = 1_000  # generation g trains with seed + (g - 1) * this: a new init and order


def run(params: Params) -> None:
    cfg = params.distill
    device = resolve_device(params.device)
    views = load_views(params)
    objective = Objective([t.model_dump(mode="json") for t in cfg.terms], cfg.temperature)
    prepare = None
    if objective.needs_teacher_features:
        name = objective.feature_teacher or next(iter(params.teachers))
        teacher, _ = load_model_dir(params.paths.teachers / name, device)
        prepared = load_meta(params.paths.prepared)
        probe = build_model(params.student.model, prepared.input_shape, prepared.num_classes)
        objective.check_layers(probe, teacher)
        views.extras = objective.teacher_targets(teacher, views.x, views.views, views.fill, device)
        print(f"distill: features of teacher {name!r} on {len(views)} views ({', '.join(views.extras)})")

        def prepare(student):
            return objective.attach(student, views.extras, views.x[:2])

    config = {"distill": cfg.model_dump(mode="json")}
    generations = []
    histories = []
    model = None
    for g in range(1, cfg.generations + 1):
        if g > 1:
            views.teacher_logits = teacher_logits_on_views(model, views.x, views.views, views.fill, device)
        last = g == cfg.generations
        model, history = train_student(
            params,
            "distill" if g == 1 else f"distill_gen{g}",
            views,
            objective,
            "student_kd" if last else None,
            {**config, "generation": g},
            seed=params.seed + (g - 1) * GENERATION_SEED_STEP,
            prepare=prepare,
        )
        objective.detach()
        histories.append(history)
        accuracy = history[-1]["eval/accuracy"]
        generations.append({"generation": g, "eval_accuracy": accuracy})
        if cfg.generations > 1:
            print(f"distill: generation {g} of {cfg.generations}: eval accuracy {accuracy:.4f}")
    write_training_time(params, "student_kd", histories)
    save_student(params, model, params.paths.student_kd, {**config, "generations": generations}, "distill", len(views))
    print(f"distill: eval accuracy {generations[-1]['eval_accuracy']:.4f}")
