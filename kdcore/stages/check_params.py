"""check_params: every key of params.yaml validated before any stage runs.

DVC removes a stage's outputs before it runs the stage's command, so a check inside a stage comes
after the loss. This stage tracks the whole params file and every other stage depends on the marker
it writes: `dvc repro` runs it first whenever the file changes, and an invalid file (a typo, an
unknown key, a value out of range, a duplicate key) stops the run before anything is removed. The
marker's content never changes, so a valid edit reruns only the stages whose own params changed.

Params that name classes (`transfer.exclude_classes`) are checked here against the data's class
names too, read from the labels alone (kdcore.data.sources.class_names), since the stage that uses
them runs after DVC has removed its outputs.
"""

from __future__ import annotations

from kdcore.artifacts import write_json
from kdcore.config import Params
from kdcore.data.sources import class_names
from kdcore.transfer.pool import excluded_indices

MARKER = "params_ok.json"


def check_against_data(params: Params) -> None:
    """The checks of params that need the data: class names given in params must be the data's."""
    if params.transfer.exclude_classes:
        excluded_indices(class_names(params.data.source, params.data.path), params.transfer.exclude_classes)


def run(params: Params) -> None:
    # reaching here means load_params accepted the file; the marker holds nothing that varies
    check_against_data(params)
    write_json(params.paths.work / MARKER, {"params": "valid"})
    print(f"check_params: params valid -> {params.paths.work / MARKER}")
