"""The methods comparison as a Prefect flow over DVC experiments: every method of
benchmarks/methods.yaml on the project's data with several seeds, then reports/methods.md.

    python -m flows.compare [--seeds 0 1 2] [--methods hinton dkd ...] [--spec benchmarks/methods.yaml] [--jobs N]

Each (method, seed) is one DVC experiment (`dvc exp run --queue -n <spec>-<method>-s<seed> -S ...`);
DVC's queue workers run them, `--jobs` at a time, each in its own workspace, and `dvc exp show`
lists them beside their params and metrics. Stages that methods share (a seed's teacher and scratch
student) come back from DVC's run cache. Finished experiments are not run again; the rows of
reports/methods.csv are read from them.
"""

from __future__ import annotations

import argparse
import re
import sys
from pathlib import Path

from flows.settings import use_local_server_if_running

use_local_server_if_running()

from typing import Any  # noqa: E402

import pandas as pd  # noqa: E402
from prefect import flow  # noqa: E402
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator  # noqa: E402

from flows.cli import run_flow  # noqa: E402
from kdcore.artifacts import atomic_path, write_text  # noqa: E402
from kdcore.config import Section, format_validation_error, load_params, parse_params, read_yaml  # noqa: E402
from kdcore.errors import ConfigError, KdflowError  # noqa: E402
from kdcore.evaluate.methods_report import render_methods_report, save_methods_png  # noqa: E402
from tasks.experiments import (  # noqa: E402
    ExperimentFailed,
    experiment_row,
    failure_line,
    finished_experiments,
    queue_task,
    run_queue_task,
)


class MethodSpec(Section):
    """One method of the comparison: dotted overrides of params.yaml."""

    name: str = Field(pattern=r"^[A-Za-z0-9_-]+$", description="Names the experiment: letters, digits, '_' or '-'.")
    group: str | None = None
    label: str | None = None
    set: dict[str, Any] | None = Field(default=None, description="Dotted params keys and their values.")


class GroupSpec(Section):
    title: str
    reference: str | None = Field(default=None, description="The method the group's others are set against.")


class ComparisonSpec(BaseModel):
    """A comparison spec file; other top-level keys hold YAML anchors the methods refer to."""

    model_config = ConfigDict(frozen=True, extra="allow", strict=True)
    methods: list[MethodSpec] = Field(min_length=1)
    groups: dict[str, GroupSpec] | None = None

    @model_validator(mode="after")
    def _names(self) -> ComparisonSpec:
        names = [m.name for m in self.methods]
        twice = sorted({n for n in names if names.count(n) > 1})
        if twice:
            raise ValueError(f"methods: {', '.join(twice)} listed twice")
        for key, group in (self.groups or {}).items():
            if group.reference is not None and group.reference not in names:
                raise ValueError(f"groups.{key}.reference: {group.reference!r} is not a method")
        return self


def load_spec(path: Path, only: list[str] | None) -> tuple[list[dict], dict[str, dict]]:
    """The methods to run (all, or those named) and the groups' titles and reference methods; a
    malformed spec ends in ConfigError, one line naming the file and the key."""
    if not path.is_file():
        raise ConfigError(f"{path}: no such file")
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as err:
        raise ConfigError(f"{path}: unreadable ({err})") from None
    raw = read_yaml(text, source=str(path))
    if not isinstance(raw, dict) or "methods" not in raw:
        raise ConfigError(f"{path}: no `methods:` list")
    try:
        spec = ComparisonSpec.model_validate(raw).model_dump()
    except ValidationError as err:
        raise ConfigError(format_validation_error(err, str(path))) from None
    methods = spec["methods"]
    names = [m["name"] for m in methods]
    unknown = sorted(set(only or []) - set(names))
    if unknown:
        raise ConfigError(f"--methods: unknown {', '.join(unknown)}; {path} has {', '.join(names)}")
    return [m for m in methods if not only or m["name"] in only], spec.get("groups") or {}


def experiment_name(spec: Path, method: str, seed: int) -> str:
    """`methods-hinton-s0`: the spec's name, the method and the seed, as a git ref name allows."""
    return re.sub(r"[^A-Za-z0-9_-]+", "-", f"{spec.stem}-{method}-s{seed}")


def experiment_plan(chosen: list[dict], seeds: list[int], spec: Path) -> list[tuple[str, str, dict, int]]:
    """(experiment, method, overrides, seed), method by method: parallel workers then start on
    different seeds, and a later method finds its seed's teacher in the run cache."""
    return [
        (experiment_name(spec, m["name"], seed), m["name"], {**(m.get("set") or {}), "seed": seed}, seed)
        for m in chosen
        for seed in seeds
    ]


def check_plan(base: dict, planned: list[tuple[str, str, dict, int]]) -> None:
    """Every experiment's params validated before anything is queued: ConfigError naming the
    experiment and the key (a queued experiment would fail only when its turn came)."""
    import copy

    from kdcore.experiments.sweep import set_dotted

    for name, _, overrides, _ in planned:
        raw = copy.deepcopy(base)
        for dotted, value in overrides.items():
            set_dotted(raw, dotted, value)
        parse_params(raw, source=f"experiment {name}")


def merge_rows(earlier: pd.DataFrame, rows: list[dict], order: list[str]) -> list[dict]:
    """`rows` (this run's experiments) with the rows of `earlier` for (method, seed) pairs not among them,
    in the spec's method order, then by seed; methods no longer in the spec are dropped."""
    ran = {(r["method"], int(r["seed"])) for r in rows}
    kept = [r for r in earlier.to_dict("records") if (r["method"], int(r["seed"])) not in ran and r["method"] in order]
    return sorted(kept + rows, key=lambda r: (order.index(r["method"]), int(r["seed"])))


@flow(name="kdflow-methods", log_prints=True)
def compare_methods(
    spec: str = "benchmarks/methods.yaml",
    seeds: list[int] = (0, 1, 2),  # type: ignore[assignment]
    methods: list[str] | None = None,
    repo: str = ".",
    jobs: int | None = None,
    reports: str = "reports",
    keep_others: bool = False,
) -> str:
    """Queues every (method, seed) as a DVC experiment, runs the queue, and writes reports/methods.csv
    and reports/methods.md from the finished experiments. With `keep_others`, the rows of reports/methods.csv
    for methods or seeds not run this time stay in the table (they were measured on an earlier commit)."""
    root = Path(repo).resolve()
    chosen, group_info = load_spec(Path(spec), methods)
    params_file = root / "params.yaml"
    params = load_params(params_file)
    base = read_yaml(params_file.read_text(), source=str(params_file))
    planned = experiment_plan(chosen, list(seeds), Path(spec))
    check_plan(base, planned)
    workers = jobs or params.orchestration.parallel
    queue_task(str(root), base, [(name, overrides) for name, _, overrides, _ in planned])
    states = run_queue_task(str(root), [name for name, *_ in planned], workers)

    finished = finished_experiments(root)
    rows = [experiment_row(finished[name], method) for name, method, _, _ in planned if name in finished]
    csv = Path(reports) / "methods.csv"
    if keep_others and rows and csv.is_file():
        every, group_info = load_spec(Path(spec), None)
        rows = merge_rows(pd.read_csv(csv), rows, [m["name"] for m in every])
        chosen = [m for m in every if m["name"] in {r["method"] for r in rows}]
    frame = pd.DataFrame(rows)
    report = ""
    if rows:
        with atomic_path(csv) as tmp:
            frame.to_csv(tmp, index=False)
        labels = {m["name"]: m.get("label") or m["name"] for m in chosen}
        groups = {m["name"]: m.get("group") or "other" for m in chosen}
        command = "python -m flows.compare --seeds " + " ".join(map(str, seeds))
        sizes = params.data.splits
        where = (
            f"`{params.data.source}` ({sizes.teacher_train} teacher / {sizes.transfer} transfer / "
            f"{sizes.test} test samples)"
        )
        save_methods_png(Path(reports) / "methods.png", frame, labels, groups)
        report = render_methods_report(frame, labels, groups, command, group_info, where, image="methods.png")
        write_text(Path(reports) / "methods.md", report)
        print(f"methods: {len(frame)} experiments -> {Path(reports) / 'methods.md'}; `dvc exp show` lists them")
    failed = [name for name, *_ in planned if name not in finished]
    if failed:
        first = failed[0]
        raise ExperimentFailed(
            f"{len(failed)} of {len(planned)} experiments did not finish ({', '.join(failed)}); "
            f"{first} ({states.get(first, 'unknown')}): {failure_line(root, first)}"
        )
    return report


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m flows.compare", description=__doc__.split("\n\n")[0])
    parser.add_argument("--spec", default="benchmarks/methods.yaml")
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--methods", nargs="+", help="only these methods (default: all in the spec)")
    parser.add_argument("--repo", default=".", help="the kdflow project (default: the current directory)")
    parser.add_argument("--jobs", type=int, help="DVC queue workers at once (default: orchestration.parallel)")
    parser.add_argument("--reports", default="reports")
    parser.add_argument(
        "--keep-others", action="store_true", help="keep reports/methods.csv's rows of methods and seeds not run now"
    )
    args = parser.parse_args(argv)
    try:
        chosen, _ = load_spec(Path(args.spec), args.methods)
        load_params(Path(args.repo) / "params.yaml")
        params_file = Path(args.repo) / "params.yaml"
        base = read_yaml(params_file.read_text(), source=str(params_file))
        check_plan(base, experiment_plan(chosen, args.seeds, Path(args.spec)))
        if args.jobs is not None and args.jobs < 1:
            raise ConfigError(f"--jobs must be at least 1, got {args.jobs}")
    except KdflowError as err:
        print(f"kdflow compare: error: {err}", file=sys.stderr)
        return err.exit_code
    return run_flow(
        "kdflow compare",
        compare_methods,
        spec=args.spec,
        seeds=args.seeds,
        methods=args.methods,
        repo=args.repo,
        jobs=args.jobs,
        reports=args.reports,
        keep_others=args.keep_others,
    )


if __name__ == "__main__":
    sys.exit(main())
