"""dvc.yaml's code deps are each stage's import closure, stages are only stages, library functions
take explicit arguments: the structure that keeps `dvc repro` rerunning exactly what a change touches."""

from __future__ import annotations

import ast
import shutil
from pathlib import Path

import yaml

from kdcore import code_deps
from kdcore.stages import STAGE_NAMES
from tests.conftest import ROOT

DVC_YAML = yaml.safe_load((ROOT / "dvc.yaml").read_text())
# modules above the stages (they run stages) and the tools that read them: not library floors
ABOVE_STAGES = ("kdcore/__main__.py", "kdcore/code_deps.py", "kdcore/experiments/")


def test_every_stage_depends_on_exactly_the_code_it_imports() -> None:
    problems = code_deps.drift(DVC_YAML)
    assert not problems, (
        f"dvc.yaml's kdcore/ deps differ from the stages' imports: {problems}; run `python -m kdcore.code_deps --write`"
    )


def test_the_written_deps_are_what_the_writer_writes() -> None:
    text = (ROOT / "dvc.yaml").read_text()
    assert code_deps.rewrite_code_deps(text, code_deps.stage_code) == text


def test_a_new_import_is_a_missing_dep_and_a_dropped_one_an_extra(tmp_path: Path) -> None:
    shutil.copytree(ROOT / "kdcore", tmp_path / "kdcore", ignore=shutil.ignore_patterns("__pycache__"))
    distill = tmp_path / "kdcore/stages/distill.py"
    # the shifts of every view: a module distill reaches only through kdcore.training
    assert "kdcore/data/transforms.py" in code_deps.stage_code("distill", tmp_path)
    assert "kdcore/synth/noise.py" not in code_deps.stage_code("distill", tmp_path)
    distill.write_text(distill.read_text() + "\n\ndef _later():\n    from kdcore.synth import noise  # noqa\n")
    problems = code_deps.drift(DVC_YAML, tmp_path)
    assert "kdcore/synth/noise.py" in problems["distill"]["missing"]
    assert "kdcore/synth/__init__.py" in problems["distill"]["missing"]
    assert set(problems) == {"distill"}  # no other stage imports distill
    rewritten = code_deps.rewrite_code_deps(
        (ROOT / "dvc.yaml").read_text(), lambda stage: code_deps.stage_code(stage, tmp_path)
    )
    assert code_deps.drift(yaml.safe_load(rewritten), tmp_path) == {}
    (tmp_path / "kdcore/gate.py").unlink()  # update imports it
    assert "kdcore/gate.py" in code_deps.drift(DVC_YAML, tmp_path)["update"]["extra"]


def test_relative_and_submodule_imports_are_followed(tmp_path: Path) -> None:
    pkg = tmp_path / "kdcore"
    (pkg / "sub").mkdir(parents=True)
    (pkg / "__init__.py").write_text("")
    (pkg / "sub" / "__init__.py").write_text("from . import leaf\n")
    (pkg / "sub" / "leaf.py").write_text("from ..other import thing\n")
    (pkg / "other.py").write_text("def thing():\n    import kdcore.late\n")
    (pkg / "late.py").write_text("")
    found = code_deps.import_closure(["kdcore.sub"], tmp_path)
    assert found == {"kdcore", "kdcore.sub", "kdcore.sub.leaf", "kdcore.other", "kdcore.late"}


def test_stages_are_the_modules_of_kdcore_stages_and_the_stages_of_dvc_yaml() -> None:
    assert sorted(STAGE_NAMES) == code_deps.stage_modules()
    assert set(code_deps.declared_code_deps(DVC_YAML)) == set(STAGE_NAMES)


def _kdcore_files() -> list[Path]:
    return sorted((ROOT / "kdcore").rglob("*.py"))


def test_no_stage_imports_another_and_no_library_module_imports_a_stage() -> None:
    for path in _kdcore_files():
        rel = path.relative_to(ROOT).as_posix()
        module = rel.removesuffix(".py").removesuffix("/__init__").replace("/", ".")
        stages = {m for m in code_deps.direct_imports(module) if m.startswith("kdcore.stages.")}
        if rel.startswith(ABOVE_STAGES) or rel == "kdcore/stages/__init__.py":
            continue
        assert not stages, f"{rel} imports {sorted(stages)}"


def test_library_functions_take_explicit_arguments_not_params() -> None:
    """Only stages (and what runs them) read the whole config; a library function takes what it uses."""
    offenders = []
    for path in _kdcore_files():
        rel = path.relative_to(ROOT).as_posix()
        if rel.startswith(("kdcore/stages/", "kdcore/config/", *ABOVE_STAGES)):
            continue
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
                args = [*node.args.posonlyargs, *node.args.args, *node.args.kwonlyargs]
                if any(a.annotation is not None and ast.unparse(a.annotation) == "Params" for a in args):
                    offenders.append(f"{rel}:{node.lineno} {node.name}")
    assert not offenders, offenders


def test_no_module_passes_400_lines() -> None:
    long = {p.relative_to(ROOT).as_posix(): n for p in _kdcore_files() if (n := len(p.read_text().splitlines())) > 400}
    assert not long, long


def test_registry_name_checks_are_deps_of_check_params_only() -> None:
    """params validation asks the registries whether a name exists; only check_params reruns for them."""
    checked = code_deps.stage_code("check_params")
    assert {"kdcore/synth/inversion.py", "kdcore/lifelong/methods.py", "kdcore/data/sources.py"} <= set(checked)
    assert "kdcore/synth/inversion.py" not in code_deps.stage_code("distill")
    assert "kdcore/synth/inversion.py" in code_deps.stage_code("synthesize")
