"""Small pieces of the orchestration layer, and the layering rule that keeps kdcore free of it."""

from __future__ import annotations

import ast
import socket
from pathlib import Path

import pytest

from flows import settings
from kdcore.gate import check_gate
from tasks.dvc_stage import stage_error
from tests.conftest import ROOT


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_kdcore_never_imports_prefect_or_dvc() -> None:
    offenders = []
    for path in (ROOT / "kdcore").rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            names = [a.name for a in node.names] if isinstance(node, ast.Import) else []
            if isinstance(node, ast.ImportFrom) and node.module:
                names = [node.module]
            offenders += [f"{path.name}: {n}" for n in names if n.split(".")[0] in ("prefect", "dvc", "flows", "tasks")]
    assert offenders == []


def test_unreachable_toml_server_falls_back_to_a_temporary_one(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    port = free_port()
    (tmp_path / "prefect.toml").write_text(f'[server.api]\nhost = "127.0.0.1"\nport = {port}\n')
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("PREFECT_API_URL", "")
    assert settings.toml_api_url() == f"http://127.0.0.1:{port}/api"
    assert settings.use_local_server_if_running() is None
    assert "PREFECT_API_URL" not in settings.os.environ  # unset, so Prefect starts a temporary server


def test_an_api_url_from_the_environment_is_kept(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PREFECT_API_URL", "https://example.invalid/api")
    assert settings.use_local_server_if_running() == "https://example.invalid/api"


def test_stage_error_prefers_kdflow_then_dvc_lines() -> None:
    output = "Running stage 'x':\nkdflow x: error: params.yaml: distill.alpha: bad\nERROR: failed to reproduce 'x'\n"
    assert stage_error("x", output) == "kdflow x: error: params.yaml: distill.alpha: bad"
    assert stage_error("y", "noise\nERROR: failed to reproduce 'y'\n") == "ERROR: failed to reproduce 'y'"
    assert stage_error("z", "") == "no output"
    # a foreach stage's command names the stage without its @<name>
    failed = (
        "Running stage 'train_teacher@cnn':\n> python -m kdcore train_teacher --teacher cnn\n"
        "kdflow train_teacher: error: teachers.cnn.pretrained: w.pt is not a safetensors file\n"
        "ERROR: failed to reproduce 'train_teacher@cnn': failed to run: python -m kdcore ..., exited with 2\n"
    )
    assert stage_error("train_teacher@cnn", failed).startswith("kdflow train_teacher: error: teachers.cnn.pretrained")


@pytest.mark.parametrize(
    ("current", "previous", "passed", "fragment"),
    [
        (0.95, None, True, "passes the floor 0.9000"),
        (0.85, None, False, "0.8500 is below the floor 0.9000"),
        (0.93, 0.96, False, "dropped 0.0300 from the last committed 0.9600, more than the budget 0.0200"),
        (0.95, 0.96, True, "last committed 0.9600"),
    ],
)
def test_gate(current: float, previous: float | None, passed: bool, fragment: str) -> None:
    before = None if previous is None else {"student_kd": {"accuracy": previous}}
    result = check_gate({"student_kd": {"accuracy": current}}, before, min_accuracy=0.9, max_drop=0.02)
    assert result.passed is passed and fragment in result.message


def test_gate_without_the_metric_fails() -> None:
    assert not check_gate({"teacher": {"accuracy": 1.0}}, None, 0.5, 0.1).passed
