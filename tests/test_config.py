"""params.yaml validation: every mistake is one line naming the key, the value and what is allowed."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from kdcore.config import load_params, parse_params
from kdcore.errors import ConfigError
from kdcore.models import build_model, count_params
from tests.conftest import ROOT, cli_error, tiny_raw, with_two_teachers, write_params


def error_for(raw: dict) -> str:
    with pytest.raises(ConfigError) as info:
        parse_params(raw)
    message = str(info.value)
    assert "\n" not in message
    return message


def test_shipped_params_are_valid_and_the_student_is_10x_smaller() -> None:
    params = load_params(ROOT / "params.yaml")
    assert params.data.source == "mnist5k"
    mnist = ((1, 28, 28), 10)
    teacher = min(count_params(build_model(t.model, *mnist)) for t in params.teachers.values())
    student = count_params(build_model(params.student.model, *mnist))
    assert teacher >= 10 * student, (teacher, student)


def test_unknown_key_lists_the_allowed_ones() -> None:
    raw = tiny_raw()
    raw["distill"]["temprature"] = 0.5
    message = error_for(raw)
    assert (
        "distill.temprature" in message and "unknown key" in message and "terms" in message and "temperature" in message
    )


def test_unknown_top_level_key() -> None:
    raw = tiny_raw()
    raw["distil"] = {}
    assert "distil: unknown key" in error_for(raw)


@pytest.mark.parametrize(
    ("dotted", "value", "expected"),
    [
        ("distill__generations", 0, ["distill.generations", "0", "greater than 0"]),
        ("distill__temperature", -2.0, ["distill.temperature", "-2.0", "greater than 0"]),
        ("teachers__cnn__train__epochs", "ten", ["teachers.cnn.train.epochs", "'ten'", "integer"]),
        ("teachers__cnn__subset", 1.5, ["teachers.cnn.subset", "1.5", "less than or equal to 1"]),
        ("data__source", "cifar", ["data.source", "'cifar'", "mnist5k", "npz"]),
        ("device", "tpu", ["device", "'tpu'"]),
        ("student__train__optimizer", "lion", ["student.train.optimizer", "'lion'", "adam"]),
    ],
)
def test_bad_values_name_key_value_and_allowed(dotted: str, value: object, expected: list[str]) -> None:
    message = error_for(tiny_raw(**{dotted: value}))
    for part in expected:
        assert part in message, (part, message)


def test_unknown_model_lists_known_models() -> None:
    raw = tiny_raw()
    raw["student"]["model"] = {"name": "resnet9000"}
    message = error_for(raw)
    assert "student.model.name" in message and "resnet9000" in message and "mlp" in message and "cnn" in message


def test_model_specific_keys_are_checked() -> None:
    raw = tiny_raw()
    raw["student"]["model"] = {"name": "mlp", "channels": [8]}
    message = error_for(raw)
    assert "student.model.channels" in message and "unknown key" in message and "hidden" in message


def test_path_required_for_user_data() -> None:
    assert "data.path is required" in error_for(tiny_raw(data__source="npz"))


def test_scratch_student_needs_labels() -> None:
    message = error_for(tiny_raw(transfer__labeled=False))
    assert "transfer.labeled" in message and "include_teacher_train" in message


def test_invalid_yaml_names_the_line(tmp_path: Path) -> None:
    path = tmp_path / "params.yaml"
    path.write_text("seed: 0\ndata: [unclosed\n")
    with pytest.raises(ConfigError, match=r"line \d+.*not valid YAML"):
        load_params(path)


def test_cli_exits_2_with_one_line_and_writes_nothing(tmp_path: Path) -> None:
    raw = tiny_raw(tmp_path, distill__temperature=-1.0)
    write_params(tmp_path / "params.yaml", raw)
    line = cli_error("kdcore", "prepare", "--params", str(tmp_path / "params.yaml"))
    assert "distill.temperature" in line and "-1.0" in line
    assert sorted(p.name for p in tmp_path.iterdir()) == ["params.yaml"]


def test_defaults_round_trip(tmp_path: Path) -> None:
    params = parse_params(tiny_raw(tmp_path))
    again = parse_params(yaml.safe_load(yaml.safe_dump(params.model_dump(mode="json"))))
    assert again == params


def test_ensemble_weights_need_one_per_teacher() -> None:
    raw = with_two_teachers(tiny_raw(), method="weights")
    raw["transfer"]["ensemble"]["weights"] = [1.0]
    message = error_for(raw)
    assert "transfer.ensemble.weights needs one weight per teacher (cnn, mlp)" in message and "[1.0]" in message


def test_teacher_names_must_be_usable_as_stage_names() -> None:
    raw = tiny_raw()
    raw["teachers"]["big teacher"] = raw["teachers"].pop("cnn")
    assert "teacher name 'big teacher'" in error_for(raw)


def test_unknown_loss_term_lists_the_known_ones() -> None:
    raw = tiny_raw()
    raw["distill"]["terms"] = [{"name": "fitnet", "weight": 1.0}]
    message = error_for(raw)
    assert "distill.terms[0]" in message and "'fitnet'" in message and "'hint'" in message and "'dkd'" in message


def test_unknown_key_inside_a_term_lists_that_terms_keys() -> None:
    raw = tiny_raw()
    raw["distill"]["terms"] = [{"name": "hint", "student_layer": ["x"], "teacher_layers": ["y"]}]
    message = error_for(raw)
    assert "distill.terms[0].student_layer: unknown key" in message and "student_layers" in message


def test_feature_layers_must_pair_up() -> None:
    raw = tiny_raw()
    raw["distill"]["terms"] = [{"name": "attention", "student_layers": ["a", "b"], "teacher_layers": ["c"]}]
    assert "must pair up one to one" in error_for(raw)


def test_feature_terms_name_a_listed_teacher() -> None:
    raw = tiny_raw()
    raw["distill"]["terms"] = [{"name": "hint", "student_layers": ["a"], "teacher_layers": ["b"], "teacher": "big"}]
    assert "teacher 'big', which is not in teachers (cnn)" in error_for(raw)


def test_born_again_generations_refuse_feature_terms() -> None:
    raw = tiny_raw(distill__generations=2)
    raw["distill"]["terms"] = [{"name": "hint", "student_layers": ["a"], "teacher_layers": ["b"]}]
    assert "need generations=1" in error_for(raw)


def test_a_key_written_twice_is_rejected_with_both_lines(tmp_path: Path) -> None:
    path = tmp_path / "params.yaml"
    path.write_text((ROOT / "params.yaml").read_text().replace("seed: 0\n", "seed: 0\nseed: 1\n", 1))
    with pytest.raises(ConfigError, match=r"key 'seed' written twice \(lines \d+ and \d+\)"):
        load_params(path)


@pytest.mark.parametrize(
    ("text", "key", "shown"),
    [
        ("epochs: yes", "student.train.epochs", "got True (YAML reads yes/no/on/off"),
        ('epochs: "30"', "student.train.epochs", "got '30'"),
        ("epochs: 30.5", "student.train.epochs", "got 30.5"),
        ('lr: "0.003"', "student.train.lr", "got '0.003'"),
    ],
)
def test_values_are_taken_strictly_not_coerced(tmp_path: Path, text: str, key: str, shown: str) -> None:
    original = (ROOT / "params.yaml").read_text()
    field = text.split(":")[0]
    student = original.index("student:")
    line_start = original.index(f"    {field}:", student)
    line_end = original.index("\n", line_start)
    path = tmp_path / "params.yaml"
    path.write_text(original[:line_start] + f"    {text}" + original[line_end:])
    with pytest.raises(ConfigError) as info:
        load_params(path)
    assert key in str(info.value) and shown in str(info.value), str(info.value)


def test_exponent_floats_read_as_numbers(tmp_path: Path) -> None:
    path = tmp_path / "params.yaml"
    path.write_text((ROOT / "params.yaml").read_text().replace("lr: 0.003", "lr: 3e-3", 1))
    assert load_params(path).student.train.lr == pytest.approx(0.003)


def test_a_misspelt_model_name_is_named_before_its_other_keys() -> None:
    raw = tiny_raw()
    raw["teachers"]["cnn"]["model"] = {"name": "cnnn", "channels": [8], "hidden": 16}
    message = error_for(raw)
    assert message.startswith("params.yaml: teachers.cnn.model.name: unknown model 'cnnn'"), message


def test_bare_yaml_on_and_off_are_the_gpu_switches_words() -> None:
    raw = tiny_raw()
    raw.update(yaml.safe_load("gpu: {amp: off, channels_last: on}"))  # YAML 1.1 reads both as booleans
    gpu = parse_params(raw).gpu
    assert (gpu.amp, gpu.channels_last) == ("off", "on")
    raw.update(yaml.safe_load("gpu: {amp: on}"))  # autocast needs a dtype: on is not one
    with pytest.raises(ConfigError, match="gpu.amp"):
        parse_params(raw)


def test_every_path_dvc_yaml_interpolates_is_in_params_yaml() -> None:
    import re

    named = set(re.findall(r"\$\{paths\.(\w+)\}", (ROOT / "dvc.yaml").read_text()))
    written = set(yaml.safe_load((ROOT / "params.yaml").read_text())["paths"])
    assert named and named <= written, f"dvc.yaml names paths params.yaml lacks: {sorted(named - written)}"
