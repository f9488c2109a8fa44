"""train_student_scratch: the baseline. The same student, views and budget, hard labels only."""

from __future__ import annotations

from kdcore.config import Params
from kdcore.losses import LOSSES
from kdcore.stages.common import write_training_time
from kdcore.stages.student import save_student, scratch_views, train_student
from kdcore.training import ViewSet


def run(params: Params) -> None:
    views = scratch_views(params)
    labeled = views.y >= 0
    # only views whose sample carries a label: the scratch student has nothing else to learn from
    views = ViewSet(views.x, views.src[labeled], views.dx[labeled], views.dy[labeled], views.y[labeled], views.fill)
    config = {"loss": "ce"}
    model, history = train_student(params, "train_student_scratch", views, LOSSES.get("ce"), "student_scratch", config)
    write_training_time(params, "student_scratch", [history])
    save_student(params, model, params.paths.student_scratch, config, "train_student_scratch", len(views))
    print(f"train_student_scratch: eval accuracy {history[-1]['eval/accuracy']:.4f}")
