"""After the stages: publish artifacts, apply the quality gate, commit the results to git."""

from __future__ import annotations

import json
import subprocess
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from prefect import get_run_logger, task
from prefect.artifacts import create_markdown_artifact, create_table_artifact

from kdcore.gate import check_gate
from tasks.dvc_stage import tool_env


class GateFailed(RuntimeError):
    """The distilled student missed the quality gate; nothing is committed."""


class UnrelatedChanges(RuntimeError):
    """The workspace holds uncommitted changes the pipeline did not make."""


class Busy(RuntimeError):
    """Another flow, or a DVC command, is running in the project; this run changed nothing."""


FLOW_LOCK = ".dvc/tmp/kdflow-flow.lock"  # held by a committing flow for its whole run


@contextmanager
def one_run_at_a_time(repo: str | Path):
    """Holds the project's flow lock while the block runs. Busy (nothing changed) when a DVC command
    holds DVC's lock (a `dvc repro` the user started) or another flow holds the flow lock: a flow
    beside either would commit, or roll back, files that run is still writing."""
    import zc.lockfile

    from tasks.dvc_stage import dvc_running

    if dvc_running(repo):
        raise Busy("a DVC command is running in this project (it holds .dvc/tmp/lock); try again when it ends")
    path = Path(repo) / FLOW_LOCK
    path.parent.mkdir(parents=True, exist_ok=True)
    try:
        lock = zc.lockfile.LockFile(str(path))
    except zc.lockfile.LockError:
        holder = path.read_text().strip() if path.is_file() else "?"
        raise Busy(f"another kdflow flow is running in this project (pid {holder}, {FLOW_LOCK}); "
                   "try again when it ends") from None  # fmt: skip
    try:
        yield
    finally:
        lock.close()


def git(repo: str, *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    result = subprocess.run(["git", *args], cwd=repo, env=tool_env(), capture_output=True, text=True)
    if check and result.returncode != 0:
        raise RuntimeError(f"git {' '.join(args)} failed: {result.stderr.strip() or result.stdout.strip()}")
    return result


def changed_paths(repo: str) -> list[str]:
    """Every modified, added, deleted or untracked path, one per file."""
    out = git(repo, "status", "--porcelain", "--untracked-files=all").stdout
    return [line[3:].split(" -> ")[-1].strip('"') for line in out.splitlines() if line.strip()]


def is_result_path(path: str, result_dirs: list[str]) -> bool:
    """What a pipeline run may change: the lock, params, git-tracked outputs, DVC's .gitignore entries."""
    if path in ("dvc.lock", "params.yaml") or path.endswith(".gitignore"):
        return True
    return any(path == d or path.startswith(d.rstrip("/") + "/") for d in result_dirs)


def unrelated_changes(repo: str, result_dirs: list[str]) -> list[str]:
    return [p for p in changed_paths(repo) if not is_result_path(p, result_dirs)]


@task(name="check-workspace")
def check_workspace(repo: str, result_dirs: list[str]) -> None:
    """Refuses to start a committing run in a workspace with unrelated uncommitted changes."""
    others = unrelated_changes(repo, result_dirs)
    if others:
        raise UnrelatedChanges(f"uncommitted changes unrelated to the pipeline: {', '.join(sorted(others)[:10])}")


def read_summary(repo: str, metrics_file: str) -> dict[str, Any]:
    return json.loads((Path(repo) / metrics_file).read_text())


def committed_summary(repo: str, metrics_file: str) -> dict[str, Any] | None:
    shown = git(repo, "show", f"HEAD:{metrics_file}", check=False)
    if shown.returncode != 0:
        return None
    try:
        return json.loads(shown.stdout)
    except json.JSONDecodeError:
        return None


@task(name="publish-artifacts")
def publish_artifacts(repo: str, metrics_file: str, report_file: str) -> None:
    """A table of the metrics, the report, and `dvc metrics diff` against the last commit."""
    summary = read_summary(repo, metrics_file)
    # one row per model; `transfer_set` (what the distilled student learned from) is not a model
    rows = [{"model": model, **values} for model, values in summary.items() if "accuracy" in values]
    create_table_artifact(rows, key="kdflow-metrics", description="metrics/summary.json of this run")
    report = Path(repo) / report_file
    if report.is_file():
        create_markdown_artifact(report.read_text(), key="kdflow-report", description="reports/report.md")
    diff = subprocess.run(
        ["dvc", "metrics", "diff", "HEAD", "--md"], cwd=repo, env=tool_env(), capture_output=True, text=True
    )
    text = diff.stdout.strip() if diff.returncode == 0 else f"dvc metrics diff failed: {diff.stderr.strip()}"
    create_markdown_artifact(
        f"# Metrics against the last commit\n\n{text or 'No metric changed.'}\n",
        key="kdflow-metrics-diff",
        description="dvc metrics diff HEAD",
    )


@task(name="quality-gate")
def quality_gate(repo: str, metrics_file: str, min_accuracy: float, max_drop: float) -> str:
    result = check_gate(read_summary(repo, metrics_file), committed_summary(repo, metrics_file), min_accuracy, max_drop)
    if not result.passed:
        raise GateFailed(result.message)
    get_run_logger().info(result.message)
    return result.message


@task(name="commit-results")
def commit_results(repo: str, result_dirs: list[str], message: str) -> str:
    """Commits the lock, params and git-tracked outputs; one commit per run, even when nothing changed."""
    others = unrelated_changes(repo, result_dirs)
    if others:
        raise UnrelatedChanges(f"refusing to commit: unrelated uncommitted changes in {', '.join(sorted(others)[:10])}")
    paths = [p for p in changed_paths(repo) if is_result_path(p, result_dirs)]
    if paths:
        git(repo, "add", "--all", "--", *paths)
    identity = []
    if not git(repo, "config", "user.email", check=False).stdout.strip():
        identity = ["-c", "user.name=kdflow pipeline", "-c", "user.email=kdflow@localhost"]
    git(repo, *identity, "commit", "--allow-empty", "-m", message)
    sha = git(repo, "rev-parse", "HEAD").stdout.strip()
    get_run_logger().info(f"committed {len(paths)} changed file(s) as {sha[:10]}")
    return sha


@task(name="dvc-push")
def push_artifacts(repo: str) -> str:
    """`dvc push` of what the committed dvc.lock names, to the project's default DVC remote, so a teammate's
    `dvc pull` of this commit gets the models without retraining. A remote that cannot be reached does
    not undo the commit: the line returned says so, and `dvc push` can be run later."""
    logger = get_run_logger()
    result = subprocess.run(["dvc", "push"], cwd=repo, env=tool_env(), capture_output=True, text=True)
    lines = [line.strip() for line in (result.stdout + result.stderr).splitlines() if line.strip()]
    if result.returncode != 0:
        reason = next((line for line in lines if line.startswith("ERROR")), lines[-1] if lines else "no output")
        line = f"dvc push failed, results committed but not pushed; run `dvc push` later ({reason})"
        logger.warning(line)
        return line
    line = f"dvc push: {lines[-1] if lines else 'done'}"
    logger.info(line)
    return line
