"""Each registry is the list params accept: every registered name validates, an unknown one is refused
with the registered names, and nothing else keeps a copy of the list."""

from __future__ import annotations

import re

import pytest

from kdcore.config import BUILTIN_MODELS, FEATURE_TERMS, parse_params
from kdcore.data.sources import SOURCES, reads_a_path
from kdcore.errors import ConfigError
from kdcore.lifelong.methods import UPDATES
from kdcore.losses import LOSSES, TERMS
from kdcore.losses.features import FEATURE_LOSSES
from kdcore.models import MODELS, build_model
from kdcore.schema import Term
from kdcore.synth import SYNTHESIZERS
from tests.conftest import ROOT, tiny_raw

CNN = {"name": "cnn", "channels": [8, 16], "hidden": 32}


def refused(raw: dict) -> str:
    with pytest.raises(ConfigError) as info:
        parse_params(raw)
    return str(info.value)


@pytest.mark.parametrize("name", SOURCES.names())
def test_every_data_source_is_a_valid_data_source(name: str) -> None:
    params = parse_params(tiny_raw(data__source=name, data__path="some/path" if reads_a_path(name) else None))
    assert params.data.source == name


def test_an_unknown_data_source_lists_the_registered_ones() -> None:
    message = refused(tiny_raw(data__source="cifar"))
    from kdcore.config.data import GRAPH_SOURCES

    known = sorted(SOURCES.names() + list(GRAPH_SOURCES))
    assert "data.source" in message and f"known: {', '.join(known)}" in message


@pytest.mark.parametrize("name", SYNTHESIZERS.names())
def test_every_synthesizer_is_a_valid_synth_method(name: str) -> None:
    raw = tiny_raw()
    raw["synth"] = {"method": name}
    assert parse_params(raw).synth.method == name


def test_an_unknown_synth_method_lists_the_registered_ones() -> None:
    raw = tiny_raw()
    raw["synth"] = {"method": "gan"}
    assert f"synth.method: unknown synthesis method 'gan'; known: {', '.join(SYNTHESIZERS.names())}" in refused(raw)


@pytest.mark.parametrize("name", UPDATES.names())
def test_every_update_method_is_a_valid_lifelong_method(name: str) -> None:
    assert parse_params(tiny_raw(lifelong__method=name)).lifelong.method == name


def test_an_unknown_lifelong_method_lists_the_registered_ones() -> None:
    message = refused(tiny_raw(lifelong__method="ewc"))
    assert f"lifelong.method: unknown lifelong method 'ewc'; known: {', '.join(UPDATES.names())}" in message


@pytest.mark.parametrize("name", TERMS.names())
def test_every_registered_term_is_a_valid_distill_term_with_a_loss(name: str) -> None:
    schema = TERMS.get(name)
    assert issubclass(schema, Term) and schema.model_fields["name"].annotation.__args__ == (name,)
    term = {"name": name, "weight": 0.5}
    if schema.feature:
        term.update(student_layers=["features.2"], teacher_layers=["features.2"])
    raw = tiny_raw()
    raw["student"]["model"] = CNN
    raw["distill"]["terms"] = [term]
    parsed = parse_params(raw).distill.terms[0]
    assert type(parsed) is schema and parsed.weight == 0.5
    assert name in (FEATURE_LOSSES if schema.feature else LOSSES)  # the loss it names exists


def test_every_loss_is_reachable_from_params() -> None:
    """A registered loss no term can select is dead: `ce` is the teachers' and the scratch student's loss."""
    assert set(LOSSES.names()) <= set(TERMS.names())
    assert set(FEATURE_LOSSES.names()) == set(FEATURE_TERMS)


def test_an_unknown_term_lists_the_registered_ones() -> None:
    raw = tiny_raw()
    raw["distill"]["terms"] = [{"name": "fitnet"}]
    message = refused(raw)
    assert "distill.terms[0]" in message and all(f"'{name}'" in message for name in TERMS.names())


def test_the_builtin_models_are_the_registered_ones() -> None:
    build_model(parse_params(tiny_raw()).student.model, (1, 8, 8), 10)  # registers the built-ins
    from kdcore.config.models import GNN_MODELS

    assert sorted(BUILTIN_MODELS + GNN_MODELS) == MODELS.names()


def _names_in_comment(line: str) -> set[str]:
    """The choices a params.yaml comment lists: `# a | b (note) | c` or `(names: a b c)`."""
    comment = line.split("#", 1)[1]
    if "names:" in comment:
        return set(comment.split("names:")[1].split(")")[0].split())
    return {part.split("(")[0].strip() for part in comment.split(";")[0].split("|")}


def test_params_yaml_and_readme_list_exactly_the_registered_names() -> None:
    lines = (ROOT / "params.yaml").read_text().splitlines()

    def comment_of(prefix: str) -> set[str]:
        return _names_in_comment(next(line for line in lines if line.strip().startswith(prefix)))

    assert comment_of("source: mnist5k") == set(SOURCES.names())
    assert comment_of("method: inversion") == set(SYNTHESIZERS.names())
    assert comment_of("method: lwf_replay") == set(UPDATES.names())
    assert comment_of("terms:") == set(TERMS.names())
    # the README's table of loss terms: one row per registered term, with the term's own keys
    readme = (ROOT / "README.md").read_text()
    section = readme.split("The student's loss is a weighted sum of terms")[1].split("```")[0]
    rows = re.findall(r"^\| `(\w+)` \|[^|]+\|([^|]*)\|$", section, re.MULTILINE)
    table = {name: set(re.findall(r"`(\w+)`", keys)) for name, keys in rows}
    assert set(table) == set(TERMS.names())
    for name, keys in table.items():
        own = set(TERMS.get(name).model_fields) - {"name", "weight", "teacher"}
        assert keys == own, name
