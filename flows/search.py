"""`kdflow search`: the student architecture search (the search_student stage) as a Prefect flow.

    python -m flows.search [--trials N] [--workers N] [--apply] [--repo .]

`--trials N` sets search.trials in params.yaml (its comments kept), so the search is part of the params
DVC tracks. With `--workers N` above 1, N processes of `python -m kdcore search_student` add trials to one
Optuna study at once (KDFLOW_SEARCH_ROLE=worker: trials only), each on params.cpu_threads threads; then
`dvc repro search_student` writes the trials, the Pareto front and the chosen student from the finished
study. `--apply` then copies the chosen student into params.yaml's student.model, for `dvc repro` to
distil, quantize, export and evaluate it.

Several machines: give `search.storage` a database they all reach (e.g. postgresql://user@host/kdflow),
run `KDFLOW_SEARCH_ROLE=worker python -m kdcore search_student` on each of them with the same commit,
params and data, and `kdflow search` (or `dvc repro search_student`) on the machine that versions the
results. Trials of several workers run in an order that depends on timing: the same study, other draws.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
from pathlib import Path

from flows.settings import use_local_server_if_running

use_local_server_if_running()

from prefect import flow, get_run_logger, task  # noqa: E402
from prefect.cache_policies import NO_CACHE  # noqa: E402

from flows.cli import run_flow  # noqa: E402
from kdcore.config import load_params  # noqa: E402
from kdcore.errors import ConfigError, KdflowError  # noqa: E402
from kdcore.search.apply import apply_choice, set_params_value  # noqa: E402
from kdcore.stages.search_student import ROLE_ENV, WORKERS_ENV  # noqa: E402
from tasks.dvc_stage import child_options, run_stage  # noqa: E402


class WorkerFailed(RuntimeError):
    """A search worker exited non-zero; the message carries its error line."""


@task(name="search-worker", task_run_name="worker {index}", cache_policy=NO_CACHE)
def search_worker(repo: str, index: int, workers: int) -> int:
    """One worker process adding trials to the study until it holds search.trials finished ones."""
    options = child_options()
    options["env"] = {**options["env"], ROLE_ENV: "worker", WORKERS_ENV: str(workers), "TQDM_DISABLE": "1"}
    result = subprocess.run([sys.executable, "-m", "kdcore", "search_student"], cwd=repo, capture_output=True,
                            text=True, **options)  # fmt: skip
    logger = get_run_logger()
    for line in result.stdout.splitlines():
        logger.info(line)
    if result.returncode != 0:
        errors = [line for line in result.stderr.splitlines() if "error:" in line] or result.stderr.splitlines()[-1:]
        raise WorkerFailed(f"search worker {index} failed (exit {result.returncode}): {' '.join(errors[-1:])}")
    return index


@flow(name="kdflow-search")
def search(repo: str = ".", workers: int = 1, apply: bool = False) -> dict:
    """The workers (when more than one), then the stage under DVC, then the choice into params.yaml."""
    if workers > 1:
        futures = [search_worker.submit(repo, i, workers) for i in range(workers)]
        for future in futures:
            future.result()
    stage = run_stage(stage="search_student", repo=repo)
    chosen = None
    if apply:
        chosen = apply_choice(Path(repo) / "params.yaml", load_params(Path(repo) / "params.yaml").paths.search
                              / "student.yaml")  # fmt: skip
        get_run_logger().info(f"student.model in params.yaml is now {chosen}")
    return {"stage": stage, "applied": chosen}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="kdflow search", description=__doc__.split("\n\n")[0])
    parser.add_argument("--trials", type=int, help="set search.trials in params.yaml first")
    parser.add_argument("--workers", type=int, default=1, help="processes adding trials at once (default 1)")
    parser.add_argument("--apply", action="store_true", help="copy the chosen student into student.model")
    parser.add_argument("--repo", default=".", help="the kdflow project (default: the current directory)")
    args = parser.parse_args(argv)
    params_file = Path(args.repo) / "params.yaml"
    try:
        if args.workers < 1:
            raise ConfigError(f"--workers must be at least 1, got {args.workers}")
        if args.trials is not None:
            if args.trials < 0:
                raise ConfigError(f"--trials must be 0 or more, got {args.trials}")
            set_params_value(params_file, "search.trials", args.trials)
        params = load_params(params_file)
        if params.search.trials == 0 and not args.apply:
            raise ConfigError("search.trials is 0 in params.yaml: give --trials N (the shipped search: 40)")
        if args.workers * params.cpu_threads > (os.cpu_count() or 1):
            print(f"kdflow search: warning: {args.workers} workers x {params.cpu_threads} threads exceed the "
                  f"{os.cpu_count()} cores: slower trials, noisier latencies", file=sys.stderr)  # fmt: skip
    except KdflowError as err:
        print(f"kdflow search: error: {err}", file=sys.stderr)
        return err.exit_code
    return run_flow("kdflow search", search, repo=str(Path(args.repo).resolve()), workers=args.workers,
                    apply=args.apply)  # fmt: skip


if __name__ == "__main__":
    sys.exit(main())
