"""`kdflow search --apply`: the chosen student (paths.search/student.yaml) copied into params.yaml's
student.model, the rest of the file (comments, order) as it was, so `dvc repro` then distils, quantizes,
exports and evaluates that student like any other."""

from __future__ import annotations

import io
from pathlib import Path

import yaml

from kdcore.artifacts import write_text
from kdcore.config import parse_params, read_yaml
from kdcore.errors import ConfigError


def apply_choice(params_path: Path, student_yaml: Path) -> dict:
    """Writes the chosen `model` of `student_yaml` into `params_path` as student.model; returns it."""
    from ruamel.yaml import YAML
    from ruamel.yaml.comments import CommentedMap

    if not Path(student_yaml).is_file():
        raise ConfigError(f"{student_yaml}: no search result (run `kdflow search` first)")
    chosen = yaml.safe_load(Path(student_yaml).read_text()).get("model")
    if not chosen:
        raise ConfigError(f"{student_yaml}: the search chose no student (see its first line)")
    text = Path(params_path).read_text()
    raw = read_yaml(text, source=str(params_path))
    raw.setdefault("student", {})["model"] = chosen
    parse_params(raw, source=str(params_path))  # the result must be valid before anything is written
    rt = YAML()
    rt.preserve_quotes = True
    rt.width = 120
    doc = rt.load(text)
    model = CommentedMap(chosen)
    for key, value in chosen.items():
        if isinstance(value, list):
            seq = rt.seq(value)
            seq.fa.set_flow_style()
            model[key] = seq
    model.fa.set_flow_style()
    doc["student"]["model"] = model
    out = io.StringIO()
    rt.dump(doc, out)
    write_text(params_path, out.getvalue())
    return chosen
