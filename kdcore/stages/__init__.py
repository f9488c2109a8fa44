"""One module per DVC stage: `python -m kdcore <stage>` validates params.yaml, then runs it.

Stages are the only code that reads the config and touches paths; no stage imports another.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable

# every module here is a stage, listed in an order that runs each after the stages it reads from
# (tests/test_code_deps.py ties this list to the modules and to dvc.yaml's stages)
STAGE_NAMES = (
    "check_params",
    "prepare",
    "train_teacher",
    "synthesize",
    "build_transfer",
    "search_student",
    "distill",
    "train_student_scratch",
    "export",
    "quantize",
    "evaluate",
    "update",
)


def get_stage(name: str) -> Callable[..., None]:
    """The stage's `run(params, **options)`, run with params.cpu_threads torch threads: results
    depend on the thread count, so it is a parameter, not whatever the machine has."""
    if name not in STAGE_NAMES:
        raise KeyError(f"unknown stage {name!r}; known: {', '.join(STAGE_NAMES)}")
    run = importlib.import_module(f"kdcore.stages.{name}").run

    def with_threads(params, **options) -> None:
        import torch

        from kdcore.errors import ConfigError
        from kdcore.runtime import configure, resolve_device

        torch.set_num_threads(params.cpu_threads)
        try:
            device = resolve_device(params.device)
        except ConfigError:  # a stage that needs the device says so itself; prepare, for one, needs none
            device = torch.device("cpu")
        configure(params.gpu, device)
        run(params, **options)

    return with_threads
