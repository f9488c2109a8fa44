"""One module per DVC stage: `python -m kdcore <stage>` validates params.yaml, then runs it.

Stages are the only code that reads the config and touches paths.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable

from kdcore.config import Params

STAGE_NAMES = ("prepare", "train_teacher", "build_transfer", "distill", "train_student_scratch", "evaluate")


def get_stage(name: str) -> Callable[[Params], None]:
    if name not in STAGE_NAMES:
        raise KeyError(f"unknown stage {name!r}; known: {', '.join(STAGE_NAMES)}")
    return importlib.import_module(f"kdcore.stages.{name}").run
