"""Comparisons as DVC experiments: each (variant, seed) is queued with `dvc exp run --queue`, DVC's
queue workers run them side by side in their own workspaces, and `dvc exp show` lists every one of
them beside its params and metrics. Stages shared between variants (the teachers, the scratch
student, a transfer set) come back from DVC's run cache instead of being trained again.

The plain functions here are what the Prefect tasks below and the benchmark scripts call.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import tempfile
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from prefect import get_run_logger, task
from prefect.cache_policies import NO_CACHE

from kdcore.evaluate.methods_report import summary_columns
from kdcore.experiments.sweep import MISSING, lookup
from tasks.dvc_stage import tool_env

# DVC's queue states: a task is waiting or running until it reaches one of the others
PENDING = {"Queued", "Running"}
_OWN_ERROR = re.compile(r"kdflow [\w@.-]+: error: .*")


class ExperimentFailed(RuntimeError):
    """A queued experiment failed; the message names it and carries the stage's own error line."""


def hydra_value(value: Any) -> str:
    """`value` in Hydra's override grammar, as `dvc exp run -S key=<value>` reads it."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | float):
        return repr(value)
    if isinstance(value, str):
        return "'" + value.replace("\\", "\\\\").replace("'", "\\'") + "'"
    if isinstance(value, list | tuple):
        return "[" + ",".join(hydra_value(v) for v in value) + "]"
    if isinstance(value, dict):
        for key in value:
            if not re.fullmatch(r"[A-Za-z_][\w-]*", str(key)):
                raise ValueError(f"key {key!r} cannot be written as a Hydra override")
        return "{" + ",".join(f"{k}:{hydra_value(v)}" for k, v in value.items()) + "}"
    raise ValueError(f"{value!r} ({type(value).__name__}) cannot be written as a Hydra override")


def hydra_overrides(base: dict, overrides: dict[str, Any]) -> list[str]:
    """`-S` arguments that make params.yaml (`base`) take each dotted override exactly.

    A dict value replaces the dict it names, as in kdcore.experiments.sweep (Hydra would merge the two: so the
    key is removed, then added); a new key is added; anything else is set."""
    out = []
    for dotted, value in overrides.items():
        if isinstance(value, dict) and lookup(base, dotted) is not MISSING:
            out += [f"~{dotted}", f"+{dotted}={hydra_value(value)}"]
        else:
            out.append(f"++{dotted}={hydra_value(value)}")
    return out


def dvc(repo: str | Path, *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    # output through files, not pipes: `dvc queue start` leaves workers behind that inherit its
    # descriptors, and a pipe would not reach end-of-file until the last worker exits
    with tempfile.TemporaryFile("w+") as out, tempfile.TemporaryFile("w+") as err:
        code = subprocess.run(["dvc", *args], cwd=repo, env=tool_env(), stdout=out, stderr=err).returncode
        out.seek(0)
        err.seek(0)
        result = subprocess.CompletedProcess(["dvc", *args], code, out.read(), err.read())
    if check and result.returncode != 0:
        lines = [line for line in (result.stderr + result.stdout).splitlines() if line.strip()]
        raise ExperimentFailed(f"dvc {' '.join(args[:3])} failed: {lines[-1] if lines else 'no output'}")
    return result


def queue_status(repo: str | Path) -> dict[str, str]:
    """Name -> DVC queue state (Queued, Running, Success, Failed, ...) of every queued experiment."""
    from dvc.repo import Repo

    with Repo(str(repo)) as dvc_repo:
        return {entry["name"]: entry["status"] for entry in dvc_repo.experiments.celery_queue.status() if entry["name"]}


@dataclass
class Experiment:
    """One finished experiment of the current baseline, as `dvc exp show --json` gives it."""

    name: str
    rev: str
    params: dict[str, Any]
    metrics: dict[str, dict[str, Any]] = field(default_factory=dict)


def finished_experiments(repo: str | Path) -> dict[str, Experiment]:
    """The experiments of HEAD that completed, by name, with their params.yaml and metrics files."""
    shown = json.loads(dvc(repo, "exp", "show", "--json", "--no-fetch").stdout or "[]")
    found = {}
    for baseline in shown:
        for exp in baseline.get("experiments") or []:
            for rev in exp.get("revs") or []:
                data = rev.get("data") or {}
                if rev.get("error") or not exp.get("name") or not data.get("metrics"):
                    continue
                params = (data.get("params") or {}).get("params.yaml", {}).get("data", {})
                metrics = {path: entry.get("data", {}) for path, entry in data["metrics"].items()}
                found[exp["name"]] = Experiment(exp["name"], rev["rev"], params, metrics)
    return found


def failure_line(repo: str | Path, name: str) -> str:
    """The telling line of a failed experiment's log: kdflow's own error, else DVC's, else the last."""
    log = dvc(repo, "queue", "logs", name, check=False)
    lines = [line.strip() for line in (log.stdout + log.stderr).splitlines() if line.strip()]
    own = [line for line in lines if _OWN_ERROR.search(line)]
    dvc_errors = [line for line in lines if line.startswith("ERROR:")]
    return (own or dvc_errors or lines[-1:] or ["no log"])[0]


def queue_experiments(
    repo: str | Path, base: dict, runs: Iterable[tuple[str, dict[str, Any]]], log: Callable[[str], None] = print
) -> list[str]:
    """Queues each (experiment name, dotted overrides) that has not finished and is not queued
    already; returns the names queued now."""
    done = finished_experiments(repo)
    status = queue_status(repo)
    queued = []
    for name, overrides in runs:
        if name in done or status.get(name) in PENDING:
            continue
        args = [f"-S={arg}" for arg in hydra_overrides(base, overrides)]
        force = ["--force"] if name in status else []  # an earlier failed run of the same name
        dvc(repo, "exp", "run", "--queue", "--name", name, *force, *args)
        queued.append(name)
    log(f"queued {len(queued)} experiment(s); {len(done)} finished before")
    return queued


def queue_workers_alive(repo: str | Path) -> bool:
    """Whether a DVC queue worker of `repo` is running (its pid files under .dvc/tmp/exps/celery)."""
    for pid_file in (Path(repo) / ".dvc" / "tmp" / "exps" / "celery").glob("dvc-exp-worker-*.pid"):
        try:
            pid = int(pid_file.read_text().strip())
            os.kill(pid, 0)
            stat = Path(f"/proc/{pid}/stat")  # Linux: a zombie has exited but is not yet reaped
            if stat.is_file() and stat.read_text().rsplit(")", 1)[-1].split()[0] == "Z":
                continue
        except (ValueError, OSError, IndexError):
            continue
        return True
    return False


def run_queue(
    repo: str | Path,
    names: list[str],
    jobs: int,
    poll_s: float = 5.0,
    log: Callable[[str], None] = print,
    max_restarts: int = 3,
) -> dict[str, str]:
    """Starts `jobs` DVC queue workers and waits until every experiment in `names` has ended;
    returns name -> final state, and logs each as it ends. A worker can exit while experiments are
    still queued (its filesystem broker can read a message half-written under load); the queue is
    then started again, at most `max_restarts` times."""
    status = queue_status(repo)
    if any(status.get(n) in PENDING for n in names):
        dvc(repo, "queue", "start", "--jobs", str(jobs))
    ended: dict[str, str] = {n: s for n, s in status.items() if n in names and s not in PENDING}
    started = time.perf_counter()
    restarts, idle_polls = 0, 0
    while True:
        status = queue_status(repo)
        for name in names:
            state = status.get(name, "Success")  # no longer in the queue: finished earlier
            if state not in PENDING and name not in ended:
                ended[name] = state
                waited = time.perf_counter() - started
                log(f"{name}: {state} ({len(ended)} of {len(names)} ended, {waited:.0f} s)")
        if len(ended) == len(names):
            return ended
        queued = [n for n in names if status.get(n) == "Queued"]
        # two polls in a row without a worker: one just started has had time to write its pid file
        idle_polls = idle_polls + 1 if queued and not queue_workers_alive(repo) else 0
        if idle_polls >= 2:
            if restarts == max_restarts:
                raise ExperimentFailed(
                    f"the DVC queue worker exited {restarts + 1} times with {', '.join(queued)} still queued; "
                    f"see {Path(repo) / '.dvc/tmp/exps/celery'}"
                )
            restarts, idle_polls = restarts + 1, 0
            log(f"no DVC queue worker is running and {len(queued)} experiment(s) are queued: starting it again")
            dvc(repo, "queue", "start", "--jobs", str(jobs))
        time.sleep(poll_s)


def train_seconds(exp: Experiment, metrics_dir: str, model: str) -> float | None:
    """Training seconds of one model of an experiment, from its metrics/timings/<model>.json."""
    timing = exp.metrics.get(str(Path(metrics_dir) / "timings" / f"{model}.json"))
    return timing.get("train_seconds") if timing else None


def experiment_row(exp: Experiment, method: str) -> dict[str, Any]:
    """One row of the comparison from an experiment's params and metrics (the columns kdcore.experiments.sweep
    writes, where an experiment has them)."""
    params, summary = exp.params, exp.metrics.get(str(Path(exp.params["paths"]["metrics"]) / "summary.json"), {})
    if not summary:
        raise ExperimentFailed(f"{exp.name}: no metrics/summary.json in the experiment")
    metrics_dir = params["paths"]["metrics"]
    teachers = list(params["teachers"])
    transfer_set = summary.get("transfer_set", {})
    synth = params.get("synth") or {}
    source = params.get("transfer", {}).get("source", "real")
    teacher_seconds = [train_seconds(exp, metrics_dir, f"teacher_{t}") for t in teachers]
    return {
        "method": method,
        "seed": params["seed"],
        "experiment": exp.name,
        "rev": exp.rev[:7],
        "student": params["student"]["model"]["name"],
        **summary_columns(summary, teachers),
        "distill_s": train_seconds(exp, metrics_dir, "student_kd"),
        "scratch_s": train_seconds(exp, metrics_dir, "student_scratch"),
        "teachers_s": round(sum(s for s in teacher_seconds if s is not None), 2),
        "transfer_source": source,
        "transfer_real_samples": transfer_set.get("real_samples"),
        "transfer_synthetic_samples": transfer_set.get("synthetic_samples"),
        "synth_method": synth.get("method", "") if source != "real" else "",
    }


@task(name="queue-experiments", cache_policy=NO_CACHE)
def queue_task(repo: str, base: dict, runs: list[tuple[str, dict[str, Any]]]) -> list[str]:
    """`dvc exp run --queue` for every run not finished or queued yet."""
    return queue_experiments(repo, base, runs, log=get_run_logger().info)


@task(name="run-experiment-queue", cache_policy=NO_CACHE)
def run_queue_task(repo: str, names: list[str], jobs: int, poll_s: float = 5.0) -> dict[str, str]:
    """`dvc queue start --jobs N`, then waits for the named experiments, logging each as it ends."""
    return run_queue(repo, names, jobs, poll_s, log=get_run_logger().info)
