"""check_params: every key of params.yaml validated before any stage runs.

DVC removes a stage's outputs before it runs the stage's command, so a check inside a stage comes
after the loss. This stage tracks the whole params file and every other stage depends on the marker
it writes: `dvc repro` runs it first whenever the file changes, and an invalid file (a typo, an
unknown key, a value out of range, a duplicate key) stops the run before anything is removed. The
marker's content never changes, so a valid edit reruns only the stages whose own params changed.
"""

from __future__ import annotations

from kdcore.artifacts import write_json
from kdcore.config import Params

MARKER = "params_ok.json"


def run(params: Params) -> None:
    # reaching here means load_params accepted the file; the marker holds nothing that varies
    write_json(params.paths.work / MARKER, {"params": "valid"})
    print(f"check_params: params valid -> {params.paths.work / MARKER}")
