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
"""

from __future__ import annotations

from kdcore.artifacts import write_json
from kdcore.config import Params
from kdcore.data.sources import data_header
from kdcore.data.splits import stratified_split
from kdcore.transfer.pool import excluded_indices

MARKER = "params_ok.json"


def check_against_data(params: Params) -> None:
    """The checks of params that need the data: the classes params name, the split sizes, the views."""
    header = data_header(params.data.source, params.data.path)
    if params.transfer.exclude_classes:
        excluded_indices(header.class_names, params.transfer.exclude_classes)
    stratified_split(header.labels, params.data.splits.model_dump(), params.seed)
    params.check_for_kind(header.kind)


def run(params: Params) -> None:
    # reaching here means load_params accepted the file; the marker holds nothing that varies
    check_against_data(params)
    write_json(params.paths.work / MARKER, {"params": "valid"})
    print(f"check_params: params valid -> {params.paths.work / MARKER}")
