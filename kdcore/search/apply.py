"""Edits of params.yaml that keep its comments and order: the chosen student (paths.search/student.yaml)
copied into student.model (`kdflow search --apply`, so `dvc repro` then distils, quantizes, exports and
evaluates that student like any other), and `kdflow search --trials N`."""

from __future__ import annotations

import io
from pathlib import Path
from typing import Any

import yaml

from kdcore.artifacts import write_text
from kdcore.config import parse_params, read_yaml
from kdcore.errors import ConfigError


def set_params_value(params_path: Path, dotted: str, value: Any) -> None:
    """Sets `dotted` (e.g. search.trials) in the params file to `value`, after checking that the result is
    valid params; lists and mappings in `value` are written in flow style, the rest of the file unchanged."""
    from ruamel.yaml import YAML
    from ruamel.yaml.comments import CommentedMap

    text = Path(params_path).read_text()
    raw = read_yaml(text, source=str(params_path))
    *parents, leaf = dotted.split(".")
    node = raw
    for key in parents:
        node = node.setdefault(key, {})
    node[leaf] = value
    parse_params(raw, source=str(params_path))  # nothing is written unless the result is valid
    rt = YAML()
    rt.preserve_quotes = True
    rt.width = 120
    doc = rt.load(text)
    node = doc
    for key in parents:
        if key not in node:
            node[key] = CommentedMap()
        node = node[key]
    node[leaf] = _flow(rt, value)
    out = io.StringIO()
    rt.dump(doc, out)
    write_text(params_path, out.getvalue())


def _flow(rt, value: Any) -> Any:
    from ruamel.yaml.comments import CommentedMap

    if isinstance(value, dict):
        mapping = CommentedMap((k, _flow(rt, v)) for k, v in value.items())
        mapping.fa.set_flow_style()
        return mapping
    if isinstance(value, list):
        seq = rt.seq([_flow(rt, v) for v in value])
        seq.fa.set_flow_style()
        return seq
    return value


def apply_choice(params_path: Path, student_yaml: Path) -> dict:
    """Writes the chosen `model` of `student_yaml` into `params_path` as student.model; returns it."""
    if not Path(student_yaml).is_file():
        raise ConfigError(f"{student_yaml}: no search result (run `kdflow search` first)")
    chosen = yaml.safe_load(Path(student_yaml).read_text()).get("model")
    if not chosen:
        raise ConfigError(f"{student_yaml}: the search chose no student (see its first line)")
    set_params_value(params_path, "student.model", chosen)
    return chosen
