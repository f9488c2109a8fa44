"""The `kdflow` command line: each subcommand reaches the code its `python -m` form runs."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from flows.kdflow import main
from tests.conftest import ROOT, tiny_raw, write_params


def test_check_accepts_the_shipped_params(capsys) -> None:
    assert main(["check", "--params", str(ROOT / "params.yaml")]) == 0
    assert "params.yaml: valid" in capsys.readouterr().out


def test_check_names_the_bad_key_in_one_line_and_writes_nothing(tmp_path: Path, capsys) -> None:
    write_params(tmp_path / "params.yaml", tiny_raw(tmp_path, student__train__epochs=True))
    assert main(["check", "--params", str(tmp_path / "params.yaml")]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "student.train.epochs" in err, err
    assert sorted(p.name for p in tmp_path.iterdir()) == ["params.yaml"]


def test_an_unknown_class_in_params_stops_before_any_stage(tmp_path: Path, capsys) -> None:
    """`transfer.exclude_classes` names classes of the data: checked by `kdflow check` and by the
    check_params stage DVC runs first, not by build_transfer after DVC has removed its outputs."""
    write_params(tmp_path / "params.yaml", tiny_raw(tmp_path, transfer__exclude_classes=[3, "eleven"]))
    assert main(["check", "--params", str(tmp_path / "params.yaml")]) == 2
    expected = "transfer.exclude_classes: unknown class 'eleven'; classes: 0, 1, 2, 3, 4, 5, 6, 7, 8, 9"
    assert capsys.readouterr().err.strip() == f"kdflow check: error: {expected}"
    stage = subprocess.run([sys.executable, "-m", "kdcore", "check_params", "--params", "params.yaml"],
                           cwd=tmp_path, capture_output=True, text=True)  # fmt: skip
    assert stage.returncode == 2 and stage.stderr.strip() == f"kdflow check_params: error: {expected}", stage.stderr
    assert sorted(p.name for p in tmp_path.iterdir()) == ["params.yaml"]  # no marker: no stage after it runs
    write_params(tmp_path / "params.yaml", tiny_raw(tmp_path, transfer__exclude_classes=list(range(10))))
    assert main(["check", "--params", str(tmp_path / "params.yaml")]) == 2  # not synth.images, as it once said
    assert capsys.readouterr().err.strip() == (
        "kdflow check: error: transfer.exclude_classes leaves no class in the transfer set (it names all 10); "
        "leave out fewer"
    )
    write_params(tmp_path / "params.yaml", tiny_raw(tmp_path, transfer__exclude_classes=[3]))
    assert main(["check", "--params", str(tmp_path / "params.yaml")]) == 2  # the bias is chosen on validation
    assert capsys.readouterr().err.strip() == (
        "kdflow check: error: distill.omitted_bias: auto chooses the omitted classes' bias on the validation "
        "split, but data.splits.validation is 0: give it samples, or set the bias (e.g. 3.5) or off"
    )
    for fix in ({"data__splits__validation": 200}, {"distill__omitted_bias": 3.5}, {"distill__omitted_bias": "off"}):
        write_params(tmp_path / "params.yaml", tiny_raw(tmp_path, transfer__exclude_classes=[3], **fix))
        assert main(["check", "--params", str(tmp_path / "params.yaml")]) == 0, capsys.readouterr().err


def test_check_reads_a_broken_data_file_as_prepare_would(tmp_path: Path, capsys) -> None:
    (tmp_path / "data.npz").write_text("not an archive")
    write_params(
        tmp_path / "params.yaml", tiny_raw(tmp_path, data__source="npz", data__path=str(tmp_path / "data.npz"))
    )
    assert main(["check", "--params", str(tmp_path / "params.yaml")]) == 2
    err = capsys.readouterr().err.strip()
    assert err == f"kdflow check: error: data.path {tmp_path / 'data.npz'}: not an .npz archive (np.savez writes one)"


def test_report_without_a_run_says_what_to_do(tmp_path: Path, capsys) -> None:
    write_params(tmp_path / "params.yaml", tiny_raw(tmp_path))
    assert main(["report", "--params", str(tmp_path / "params.yaml")]) == 2
    assert "run `kdflow repro` first" in capsys.readouterr().err


def test_report_prints_the_metrics_table(tmp_path: Path, capsys) -> None:
    raw = tiny_raw(tmp_path)
    write_params(tmp_path / "params.yaml", raw)
    (tmp_path / "metrics").mkdir()
    (tmp_path / "metrics" / "summary.json").write_text(
        '{"student_kd": {"accuracy": 0.95, "ece": 0.01}, "student_kd_int8_pt2e": {"accuracy": 0.94}, '
        '"transfer_set": {"real_samples": 1000, "synthetic_samples": 0}}'
    )
    # the measured latencies live apart, one file per stage; the table merges them back
    (tmp_path / "metrics" / "timings").mkdir()
    (tmp_path / "metrics" / "timings" / "evaluate.json").write_text('{"student_kd": {"latency_ms_b1": 0.0271}}')
    (tmp_path / "metrics" / "timings" / "quantize.json").write_text(
        '{"student_kd_int8_pt2e": {"latency_ms_b1": 0.0383}}'
    )
    assert main(["report", "--metrics", "--params", str(tmp_path / "params.yaml")]) == 0
    out = capsys.readouterr().out
    assert "student_kd" in out and "0.95" in out and "0.0271" in out and "0.0383" in out
    assert "transfer_set" not in out and "NaN" not in out  # not a model: no row of NaN


def test_stage_runs_kdcore_with_its_arguments(tmp_path: Path, capsys) -> None:
    write_params(tmp_path / "params.yaml", tiny_raw(tmp_path))
    assert main(["stage", "prepare", "--params", str(tmp_path / "params.yaml")]) == 0
    assert (tmp_path / "data" / "prepared" / "meta.json").is_file()


def test_unknown_command_exits_2() -> None:
    with pytest.raises(SystemExit) as info:
        main(["trian"])
    assert info.value.code == 2


def test_the_console_script_is_installed() -> None:
    script = Path(sys.executable).parent / "kdflow"
    assert script.is_file(), "pip install -e . installs the kdflow console script"
    out = subprocess.run([str(script), "--help"], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0 and "kdflow check" in out.stdout


def test_measured_figures_split_off_and_merge_back(tmp_path: Path) -> None:
    from kdcore.evaluate.measured import read_rows, split_measured

    rows = {"a": {"accuracy": 0.9, "latency_ms_b1": 0.1, "latency_torch_ms_b1": 0.2}, "b": {"accuracy": 0.8}}
    computed, measured = split_measured(rows)
    assert computed == {"a": {"accuracy": 0.9}, "b": {"accuracy": 0.8}}
    assert measured == {"a": {"latency_ms_b1": 0.1, "latency_torch_ms_b1": 0.2}}  # rows without any: left out
    (tmp_path / "timings").mkdir()
    (tmp_path / "export.json").write_text(json.dumps(computed))
    (tmp_path / "timings" / "export.json").write_text(json.dumps(measured))
    assert read_rows(tmp_path, "export") == rows


@pytest.mark.parametrize(
    ("argv", "module"),
    [
        (["compare", "--seeds", "0", "--methods", "hinton"], "flows.compare"),
        (["flow", "--no-commit"], "flows.pipeline"),
        (["update", "--repo", "."], "flows.update"),
        (["stage", "distill", "--params", "p.yaml"], "kdcore.__main__"),
    ],
)
def test_run_commands_pass_their_options_on(argv: list[str], module: str, monkeypatch) -> None:
    """The options `kdflow --help` shows for a run command reach that command, whatever comes first."""
    import importlib

    seen = []
    monkeypatch.setattr(importlib.import_module(module), "main", lambda rest: seen.append(rest) or 0)
    assert main(argv) == 0
    assert seen == [argv[1:]]


def test_an_option_no_command_takes_is_refused(capsys) -> None:
    with pytest.raises(SystemExit) as info:
        main(["check", "--nope"])
    assert info.value.code == 2 and "unrecognized arguments: --nope" in capsys.readouterr().err


def test_check_decides_from_headers_and_architectures_what_stages_would_refuse(tmp_path: Path, capsys) -> None:
    """DVC removes a stage's outputs before its command runs: every refusal decidable from params, file
    headers and the architectures (built on the meta device) is made by check_params, one line each."""
    import torch
    from safetensors.torch import save_file

    from kdcore.models import build_model
    from tests.conftest import TINY

    cnn = TINY["teachers"]["cnn"]["model"]
    save_file(build_model_state(cnn, build_model), str(tmp_path / "fits.safetensors"))
    save_file(build_model_state({**cnn, "channels": [4, 8]}, build_model), str(tmp_path / "other.safetensors"))
    (tmp_path / "teacher.pt").write_bytes(b"\x80\x04\x95 a pickle")
    (tmp_path / "a_directory").mkdir()
    no_bn = {**cnn, "batchnorm": False}
    given = "teachers__cnn"
    cases = [
        ({given: {"model": cnn, "pretrained": str(tmp_path / "teacher.pt")}}, "teachers.cnn.pretrained: ",
         "is not a safetensors file"),
        ({given: {"model": cnn, "pretrained": str(tmp_path / "other.safetensors")}}, "teachers.cnn.pretrained: ",
         "does not fit model 'cnn'"),
        ({given: {"model": cnn, "pretrained": str(tmp_path / "nowhere.safetensors")}}, "teachers.cnn.pretrained",
         "not found"),
        ({given: {"model": cnn, "pretrained": str(tmp_path / "a_directory")}}, "teachers.cnn.pretrained",
         "is a directory"),
        ({"distill__terms": [{"name": "kd", "weight": 1.0},
                             {"name": "hint", "weight": 1.0, "student_layers": ["features.9"],
                              "teacher_layers": ["features.0"]}]}, "student (hint term) has no layer 'features.9'",
         "valid layers: "),
        ({"transfer__source": "synthetic", "teachers__cnn__model": no_bn}, "synth.method=inversion",
         "synth.bn_weight: 0"),
        ({"teachers__cnn__subset": 0.01}, "teachers.cnn.subset: 0.01 of the 400-sample teacher split is 4",
         "teachers.cnn.train.batch_size 16"),
        ({"student__model": {"name": "resnet18", "weights": str(tmp_path / "teacher.pt")}},
         "student.model.weights: ", "is not a safetensors file"),
    ]  # fmt: skip
    if not torch.cuda.is_available():
        cases.append(({"device": "cuda"}, "device: 'cuda' but no CUDA device", "use device: auto or cpu"))
    save_file(build_model_state(cnn, build_model), str(tmp_path / "fits.safetensors"))
    write_params(tmp_path / "params.yaml", tiny_raw(tmp_path, teachers__cnn={"model": cnn,
                 "pretrained": str(tmp_path / "fits.safetensors")}))  # fmt: skip
    assert main(["check", "--params", str(tmp_path / "params.yaml")]) == 0, capsys.readouterr().err
    for overrides, key, reason in cases:
        write_params(tmp_path / "params.yaml", tiny_raw(tmp_path, **overrides))
        capsys.readouterr()
        assert main(["check", "--params", str(tmp_path / "params.yaml")]) == 2, overrides
        err = capsys.readouterr().err.strip()
        assert len(err.splitlines()) == 1 and key in err and reason in err, (overrides, err)
    assert not (tmp_path / ".kdflow").exists()


def build_model_state(spec: dict, build) -> dict:
    from kdcore.config.models import CNNSpec

    model = build(CNNSpec(**spec), (1, 8, 8), 10)
    return {k: v.contiguous() for k, v in model.state_dict().items()}
