"""The methods comparison as a Prefect flow: every method of benchmarks/methods.yaml on the default
data with several seeds, through the real stages, then reports/methods.md.

    python -m flows.compare [--seeds 0 1 2] [--methods hinton dkd ...] [--spec benchmarks/methods.yaml]

Each (method, seed) is one task; outputs shared between methods (teachers, transfer sets, scratch
students) are trained once and reused, also across reruns (in .kdflow/methods). The rows are
written to reports/methods.csv after every run, so an interrupted sweep keeps what it measured.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

from flows.settings import use_local_server_if_running

use_local_server_if_running()

import pandas as pd  # noqa: E402
import yaml  # noqa: E402
from prefect import flow, get_run_logger, task  # noqa: E402
from prefect.cache_policies import NO_CACHE  # noqa: E402

from flows.cli import run_flow  # noqa: E402
from kdcore.artifacts import atomic_path, write_text  # noqa: E402
from kdcore.errors import ConfigError  # noqa: E402
from kdcore.methods_report import render_methods_report, save_methods_png  # noqa: E402
from kdcore.sweep import plan  # noqa: E402
from tasks.dvc_stage import StageFailed, stage_error  # noqa: E402


def load_spec(path: Path, only: list[str] | None) -> tuple[list[dict], dict[str, dict]]:
    """The methods to run (all, or those named) and the groups' titles and reference methods."""
    if not path.is_file():
        raise ConfigError(f"{path}: no such file")
    spec = yaml.safe_load(path.read_text()) or {}
    methods = spec.get("methods")
    if not methods:
        raise ConfigError(f"{path}: no `methods:` list")
    names = [m["name"] for m in methods]
    unknown = sorted(set(only or []) - set(names))
    if unknown:
        raise ConfigError(f"--methods: unknown {', '.join(unknown)}; {path} has {', '.join(names)}")
    return [m for m in methods if not only or m["name"] in only], spec.get("groups") or {}


@task(name="method-run", task_run_name="{name} seed {seed}", cache_policy=NO_CACHE)
def run_method(params: str, work: str, name: str, overrides: dict, seed: int) -> dict:
    """One (method, seed) through the real stages, in its own process (torch in a worker thread of
    this one runs about half as fast)."""
    logger = get_run_logger()
    with tempfile.TemporaryDirectory() as tmp:
        row_file = Path(tmp) / "row.json"
        cmd = [sys.executable, "-m", "kdcore.sweep", "--params", params, "--work", work, "--name", name,
               "--set", json.dumps(overrides), "--seed", str(seed), "--row", str(row_file)]  # fmt: skip
        result = subprocess.run(cmd, capture_output=True, text=True, env={**os.environ, "TQDM_DISABLE": "1"})
        for line in result.stdout.splitlines():
            logger.info(line)
        if result.returncode != 0:
            raise StageFailed(
                f"{name} seed {seed} failed (exit {result.returncode}): {stage_error('sweep', result.stderr)}"
            )
        return json.loads(row_file.read_text())


@flow(name="kdflow-methods", log_prints=True)
def compare_methods(
    spec: str = "benchmarks/methods.yaml",
    seeds: list[int] = (0, 1, 2),  # type: ignore[assignment]
    methods: list[str] | None = None,
    params: str = "params.yaml",
    work: str = ".kdflow/methods",
    reports: str = "reports",
) -> str:
    """Runs every (method, seed), seed by seed; writes reports/methods.csv and reports/methods.md."""
    chosen, group_info = load_spec(Path(spec), methods)
    data = yaml.safe_load(Path(params).read_text())["data"]
    csv = Path(reports) / "methods.csv"
    done = pd.read_csv(csv) if csv.is_file() else pd.DataFrame(columns=["method", "seed"])
    rows = [r for r in done.to_dict("records") if r["method"] in {m["name"] for m in chosen} and r["seed"] in seeds]
    have = {(r["method"], r["seed"]) for r in rows}
    for name, overrides, seed in plan(chosen, list(seeds)):
        if (name, seed) in have:
            continue
        rows.append(run_method(params, work, name, overrides, seed))
        with atomic_path(csv) as tmp:
            pd.DataFrame(rows).to_csv(tmp, index=False)
    frame = pd.DataFrame(rows)
    labels = {m["name"]: m.get("label", m["name"]) for m in chosen}
    groups = {m["name"]: m.get("group", "other") for m in chosen}
    command = "python -m flows.compare --seeds " + " ".join(map(str, seeds))
    sizes = data["splits"]
    where = (
        f"`{data['source']}` ({sizes['teacher_train']} teacher / {sizes['transfer']} transfer / "
        f"{sizes['test']} test samples)"
    )
    save_methods_png(Path(reports) / "methods.png", frame, labels, groups)
    report = render_methods_report(frame, labels, groups, command, group_info, where, image="methods.png")
    write_text(Path(reports) / "methods.md", report)
    print(f"methods: {len(frame)} runs -> {Path(reports) / 'methods.md'}")
    return report


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m flows.compare", description=__doc__.split("\n\n")[0])
    parser.add_argument("--spec", default="benchmarks/methods.yaml")
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--methods", nargs="+", help="only these methods (default: all in the spec)")
    parser.add_argument("--params", default="params.yaml")
    parser.add_argument("--work", default=".kdflow/methods", help="where stage outputs are kept and reused")
    parser.add_argument("--reports", default="reports")
    args = parser.parse_args(argv)
    try:
        load_spec(Path(args.spec), args.methods)
    except ConfigError as err:
        print(f"kdflow compare: error: {err}", file=sys.stderr)
        return 2
    return run_flow(
        "kdflow compare",
        compare_methods,
        spec=args.spec,
        seeds=args.seeds,
        methods=args.methods,
        params=args.params,
        work=args.work,
        reports=args.reports,
    )


if __name__ == "__main__":
    sys.exit(main())
