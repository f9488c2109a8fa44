"""The kdflow pipeline as a Prefect flow over the DVC stages.

The DAG comes from dvc.yaml through DVC's Python API; each stage is its own task (`dvc repro
--single-item`), so DVC still decides what is up to date and dvc.lock stays the record. Stages
are submitted to a Prefect task runner as soon as their upstream stages finish, so independent
ones (the teachers) can run in parallel (orchestration.parallel, orchestration.task_runner). After the
stages: artifacts (metrics table, report, metrics diff), the quality gate, and one git commit. One
flow runs at a time in a project, never beside a `dvc repro` (tasks/results.py, one_run_at_a_time).

    python -m flows.pipeline [--repo PATH] [--no-commit]
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

from flows.settings import use_local_server_if_running

use_local_server_if_running()

from prefect import flow  # noqa: E402
from prefect.runtime import flow_run  # noqa: E402
from prefect.states import Failed  # noqa: E402
from prefect.task_runners import ThreadPoolTaskRunner  # noqa: E402

from flows.cli import run_flow  # noqa: E402
from kdcore.config import load_params  # noqa: E402
from kdcore.errors import ConfigError  # noqa: E402
from tasks.dvc_stage import run_stage  # noqa: E402
from tasks.results import (  # noqa: E402
    Busy,
    check_workspace,
    commit_results,
    one_run_at_a_time,
    publish_artifacts,
    push_artifacts,
    quality_gate,
)


def read_dag(repo: Path) -> tuple[list[str], dict[str, list[str]], list[str]]:
    """From repo's dvc.yaml: stage names, each after the stages it depends on; each stage's direct
    upstream stages; and the outputs git keeps (`cache: false`: metrics, plots, reports), which a
    run may commit."""
    import networkx as nx
    from dvc.repo import Repo
    from dvc.stage import PipelineStage

    with Repo(str(repo)) as dvc_repo:
        graph = dvc_repo.index.graph  # edges point from a stage to the stages it depends on
        # dvc.yaml's stages; data tracked by `dvc add` (.dvc files, e.g. accepted increments) has nothing to run
        stages = [s for s in reversed(list(nx.topological_sort(graph))) if isinstance(s, PipelineStage)]
        upstream = {
            stage.name: sorted(dep.name for dep in graph.successors(stage) if isinstance(dep, PipelineStage))
            for stage in stages
        }
        git_outputs = sorted(
            os.path.relpath(out.fs_path, dvc_repo.root_dir)
            for stage in stages
            for out in stage.outs
            if not out.use_cache
        )
    return [stage.name for stage in stages], upstream, git_outputs


def make_task_runner(kind: str, parallel: int):
    """Prefect's task runner for the stages: Dask's when asked for (or `auto` and installed),
    else a thread pool of `parallel` workers (1: one stage at a time, as `dvc repro`)."""
    if kind in ("dask", "auto"):
        try:
            from prefect_dask import DaskTaskRunner
        except ImportError:
            if kind == "dask":
                raise ConfigError(
                    "orchestration.task_runner: dask needs the prefect-dask package (pip install 'kdflow[dask]')"
                ) from None
        else:
            return DaskTaskRunner(cluster_kwargs={"n_workers": parallel, "threads_per_worker": 1, "processes": False})
    return ThreadPoolTaskRunner(max_workers=parallel)


@flow(name="kdflow-stages", log_prints=True)
def run_stages(order: list[str], upstream: dict[str, list[str]], repo: str, retries: int, retry_delay_s: float):
    """Submits every stage once its upstream stages are done; independent stages (the teachers,
    the two students) run side by side as far as the task runner allows."""
    retrying = run_stage.with_options(retries=retries, retry_delay_seconds=retry_delay_s)
    futures = {}
    for stage in order:
        futures[stage] = retrying.submit(stage, repo, wait_for=[futures[u] for u in upstream[stage]])
    return [futures[stage].result() for stage in order]


@flow(name="kdflow-pipeline", log_prints=True)
def kd_pipeline(repo: str = ".", commit: bool = True):
    """Runs every DVC stage in order, publishes the results, gates them and commits them. Beside a
    running `dvc repro` or another flow it changes nothing and ends in state Busy."""
    root = str(Path(repo).resolve())
    try:
        with one_run_at_a_time(root):
            return run_pipeline(root, commit)
    except Busy as err:
        print(f"not started: {err}")
        return Failed(name="Busy", message=str(err))


def run_pipeline(root: str, commit: bool) -> dict[str, object]:
    params = load_params(Path(root) / "params.yaml")
    paths = params.paths
    order, upstream, result_dirs = read_dag(Path(root))
    if commit:
        check_workspace(root, result_dirs)

    cfg = params.orchestration
    runner = make_task_runner(cfg.task_runner, cfg.parallel)
    outcomes = run_stages.with_options(task_runner=runner)(order, upstream, root, cfg.retries, cfg.retry_delay_s)

    metrics_file = str(paths.metrics / "summary.json")
    publish_artifacts(root, metrics_file, str(paths.reports / "report.md"))
    gate = quality_gate(root, metrics_file, params.gate.min_accuracy, params.gate.max_drop)
    sha = None
    if commit:
        message = f"kdflow pipeline: flow run {flow_run.name} ({flow_run.id})\n\n{gate}"
        sha = commit_results(root, result_dirs, message)
    pushed = push_artifacts(root) if sha and cfg.push else None
    ran = [o["stage"] for o in outcomes if o["ran"]]
    print(f"stages run: {', '.join(ran) or 'none (all up to date)'}; commit: {sha or 'none'}; {pushed or 'not pushed'}")
    return {"stages": outcomes, "commit": sha, "gate": gate, "push": pushed}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m flows.pipeline", description="Run the kdflow pipeline flow once.")
    parser.add_argument("--repo", default=".", help="the kdflow project (default: the current directory)")
    parser.add_argument("--no-commit", action="store_true", help="do not commit the results to git")
    args = parser.parse_args(argv)
    return run_flow("kdflow pipeline", kd_pipeline, repo=args.repo, commit=not args.no_commit)


if __name__ == "__main__":
    sys.exit(main())
