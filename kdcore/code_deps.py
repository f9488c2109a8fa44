"""The code each DVC stage runs: the kdcore modules its command imports, found by reading the imports.

`python -m kdcore <stage>` runs `kdcore/__main__.py`, which imports `kdcore.stages.<stage>`; every
kdcore module reached from there through `import` statements (at module level or inside functions)
is code the stage runs, and so a dependency in dvc.yaml: a change to it must rerun the stage, and a
change to a module outside it must not. dvc.yaml's `kdcore/...` deps are written from this closure
(`python -m kdcore.code_deps --write`), and tests/test_code_deps.py fails when they drift apart.

Imports are read from the source (ast), never executed, so the answer does not depend on which
optional packages are installed. Dynamic imports (`importlib`) are not followed: kdcore has none on
a stage's path; registries import their members by name.

One deliberate narrowing: the config checks a name against its registry (a data source, a synthesis
or update method) by importing the registry inside a validator. Those imports are deps of
`check_params` only: it validates params.yaml before any other stage runs (all depend on its marker),
so a registry module that starts to refuse a name stops the pipeline there, and a change to, say,
one synthesis method does not rerun every stage that reads params.
"""

from __future__ import annotations

import argparse
import ast
import re
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]  # the project root: kdcore/ lives here
PACKAGE = "kdcore"

# Modules a stage imports that are deliberately not its DVC deps: they cannot change what a stage
# computes, and listing them would rerun every stage for a change to how errors are printed.
NOT_DEPS = {
    "kdcore/__main__.py": "the command line: parses the stage name and prints errors in one line",
    "kdcore/errors.py": "exception classes and their exit codes",
}


def module_path(module: str, root: Path = ROOT) -> Path | None:
    """kdcore.a.b -> kdcore/a/b.py or kdcore/a/b/__init__.py (relative to `root`); None if neither exists."""
    base = Path(*module.split("."))
    for candidate in (base.with_suffix(".py"), base / "__init__.py"):
        if (root / candidate).is_file():
            return candidate
    return None


def _resolve_relative(module: str | None, level: int, importer: str, is_package: bool) -> str:
    parts = importer.split(".")
    if not is_package:
        parts = parts[:-1]
    if level > 1:
        parts = parts[: len(parts) - (level - 1)]
    return ".".join([*parts, module] if module else parts)


NAME_CHECKS = f"{PACKAGE}.config"  # modules whose function-level imports only check names (see above)


def _import_nodes(tree: ast.AST, module_level_only: bool) -> list[ast.AST]:
    if not module_level_only:
        return list(ast.walk(tree))
    nodes, todo = [], [tree]
    while todo:
        node = todo.pop()
        nodes.append(node)
        todo += [c for c in ast.iter_child_nodes(node) if not isinstance(c, ast.FunctionDef | ast.AsyncFunctionDef)]
    return nodes


def direct_imports(module: str, root: Path = ROOT, name_checks: bool = True) -> frozenset[str]:
    """The kdcore modules `module`'s source names in its import statements (anywhere in the file; with
    `name_checks` false, a config module's imports inside functions are left out)."""
    path = module_path(module, root)
    if path is None:
        return frozenset()
    tree = ast.parse((root / path).read_text(encoding="utf-8"), filename=str(path))
    module_level_only = not name_checks and (module == NAME_CHECKS or module.startswith(NAME_CHECKS + "."))
    found: set[str] = set()
    for node in _import_nodes(tree, module_level_only):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                base = _resolve_relative(node.module, node.level, module, path.name == "__init__.py")
            found.add(base)
            for alias in node.names:  # `from kdcore.losses import dkd` imports the submodule dkd
                if module_path(f"{base}.{alias.name}", root) is not None:
                    found.add(f"{base}.{alias.name}")
    return frozenset(m for m in found if m == PACKAGE or m.startswith(PACKAGE + "."))


def with_parents(module: str) -> list[str]:
    """Importing a.b.c runs a/__init__.py and a/b/__init__.py first."""
    parts = module.split(".")
    return [".".join(parts[: i + 1]) for i in range(len(parts))]


def import_closure(roots: list[str], root: Path = ROOT, name_checks: bool = True) -> set[str]:
    """Every kdcore module that importing `roots` runs (`name_checks`: see direct_imports)."""
    seen: set[str] = set()
    todo = [p for r in roots for p in with_parents(r)]
    while todo:
        module = todo.pop()
        if module in seen or module_path(module, root) is None:
            continue
        seen.add(module)
        for imported in direct_imports(module, root, name_checks):
            todo.extend(p for p in with_parents(imported) if p not in seen)
    return seen


def stage_modules(root: Path = ROOT) -> list[str]:
    """The stage names: one module per stage under kdcore/stages/."""
    return sorted(p.stem for p in (root / PACKAGE / "stages").glob("*.py") if p.stem != "__init__")


def stage_code(stage: str, root: Path = ROOT) -> list[str]:
    """The files `python -m kdcore <stage>` runs, as dvc.yaml deps (sorted), less NOT_DEPS."""
    roots = [f"{PACKAGE}.__main__", f"{PACKAGE}.stages.{stage}"]
    modules = import_closure(roots, root, name_checks=stage == "check_params")
    files = {module_path(m, root).as_posix() for m in modules}
    return sorted(files - set(NOT_DEPS))


# --- dvc.yaml ------------------------------------------------------------------------------------

_STAGE = re.compile(r"^  ([A-Za-z0-9_]+):")
_ITEM = re.compile(r"^(\s*)- (\S+)")


def _command_stage(block: list[str]) -> str | None:
    """The kdcore stage a dvc.yaml stage's `cmd` runs (`python -m kdcore <stage>`)."""
    for line in block:
        match = re.search(r"cmd: python -m kdcore (\w+)", line)
        if match:
            return match.group(1)
    return None


def rewrite_code_deps(text: str, code_of) -> str:
    """dvc.yaml's text with each stage's `kdcore/...` deps replaced by `code_of(stage)`; every other
    line (comments, data deps, params, outs) is kept as it is."""
    lines = text.splitlines(keepends=True)
    starts = [i for i, line in enumerate(lines) if _STAGE.match(line)]
    end_of_stages = next((i for i, line in enumerate(lines) if line.startswith("plots:")), len(lines))
    out: list[str] = lines[: starts[0]] if starts else lines
    for n, start in enumerate(starts):
        stop = starts[n + 1] if n + 1 < len(starts) else end_of_stages
        block = lines[start:stop]
        stage = _command_stage(block)
        if stage is None:
            out += block
            continue
        wanted = code_of(stage)
        kept: list[str] = []
        in_deps, inserted, indent = False, False, ""
        for line in block:
            stripped = line.strip()
            if stripped == "deps:":
                in_deps, indent = True, line[: len(line) - len(line.lstrip())] + "  "
                kept.append(line)
                continue
            item = _ITEM.match(line)
            if in_deps and item and item.group(2).startswith(f"{PACKAGE}/"):
                if not inserted:
                    kept += [f"{indent}- {path}\n" for path in wanted]
                    inserted = True
                continue
            if in_deps and not item and stripped and not stripped.startswith("#"):
                if not inserted:  # no kdcore dep yet: the code goes at the end of deps
                    kept += [f"{indent}- {path}\n" for path in wanted]
                    inserted = True
                in_deps = False
            kept.append(line)
        out += kept
    return "".join(out + lines[end_of_stages:])


def declared_code_deps(dvc_yaml: dict) -> dict[str, list[str]]:
    """{kdcore stage: the kdcore/ deps dvc.yaml lists for it} (a foreach stage's `do` block included)."""
    declared: dict[str, list[str]] = {}
    for spec in dvc_yaml["stages"].values():
        body = spec.get("do", spec)
        match = re.search(r"python -m kdcore (\w+)", body["cmd"])
        if match is None:
            continue
        deps = [d if isinstance(d, str) else next(iter(d)) for d in body.get("deps", [])]
        declared[match.group(1)] = [d for d in deps if d.startswith(f"{PACKAGE}/")]
    return declared


def expand(deps: list[str], root: Path = ROOT) -> set[str]:
    """Directory deps as the .py files under them."""
    files: set[str] = set()
    for dep in deps:
        path = root / dep
        if path.is_dir():
            files.update(p.relative_to(root).as_posix() for p in path.rglob("*.py"))
        else:
            files.add(dep)
    return files


def drift(dvc_yaml: dict, root: Path = ROOT) -> dict[str, dict[str, list[str]]]:
    """{stage: {"missing": imported but not a dep, "extra": a dep it does not import}} for stages that differ."""
    problems = {}
    for stage, deps in declared_code_deps(dvc_yaml).items():
        have, need = expand(deps, root), set(stage_code(stage, root))
        if have != need:
            problems[stage] = {"missing": sorted(need - have), "extra": sorted(have - need)}
    return problems


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m kdcore.code_deps", description="Check or write dvc.yaml's code deps from the imports."
    )
    parser.add_argument("--write", action="store_true", help="rewrite dvc.yaml's kdcore/ deps in place")
    parser.add_argument("--dvc-yaml", default=str(ROOT / "dvc.yaml"))
    args = parser.parse_args(argv)
    import yaml

    path = Path(args.dvc_yaml)
    if args.write:
        path.write_text(rewrite_code_deps(path.read_text(encoding="utf-8"), stage_code), encoding="utf-8")
    problems = drift(yaml.safe_load(path.read_text(encoding="utf-8")))
    for stage, diff in problems.items():
        print(f"{stage}: missing {diff['missing']}, extra {diff['extra']}", file=sys.stderr)
    if not problems:
        print(f"{path}: every stage's kdcore deps are its import closure")
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())
