"""Lifelong updates as a Prefect flow: take the next new batch from the landing place, check it,
update the student, gate, then promote (one commit and a tag) or roll back.

    python -m flows.update [--repo PATH]

One run handles at most one landed batch (the first by name that is neither accepted nor rejected
before). A batch that fails its checks (or holds the same samples as an accepted increment) is
rejected: the run ends in state Rejected (exit status 4) with the reason in one line and in a
Prefect artifact, and nothing else changes. An accepted batch is written to paths.increments/<name>/,
tracked by DVC and appended to lifelong.increments; `dvc repro update` updates the student. If the
gate (lifelong.gate) passes, the run commits params.yaml, dvc.lock, the increment's .dvc file and
the metrics, tags the commit `student-update-<n>-<name>` and publishes `dvc metrics diff`. If it
fails, the run's own changes are undone (git and `dvc checkout`) and it ends in state RolledBack
(exit status 5); the rejected student stays in the DVC cache under the hash the run reports.

The run commits only what it wrote: it refuses to start (state Busy, exit status 6) beside a
running `dvc repro` or another flow, or when a file it would commit has uncommitted changes. It
writes a journal (`.dvc/tmp/kdflow-update.json`) before its first change; a run killed midway is
recovered by the next one, which rolls the killed run's changes back (or, if it had committed,
finishes it with its tag) and says so. Its `dvc` children end with it.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import yaml

from flows.settings import use_local_server_if_running

use_local_server_if_running()

from prefect import flow, get_run_logger, task  # noqa: E402
from prefect.artifacts import create_markdown_artifact, create_table_artifact  # noqa: E402
from prefect.runtime import flow_run  # noqa: E402
from prefect.states import Completed, Failed  # noqa: E402

from flows.cli import run_flow  # noqa: E402
from flows.pipeline import read_dag  # noqa: E402
from kdcore.artifacts import read_json, write_json, write_text  # noqa: E402
from kdcore.config import Params, load_params, parse_params, read_yaml  # noqa: E402
from kdcore.errors import ConfigError, KdflowError  # noqa: E402
from tasks.dvc_stage import child_options, stage_error, tool_env  # noqa: E402
from tasks.results import Busy, changed_paths, check_workspace, git, one_run_at_a_time, push_artifacts  # noqa: E402

LEDGER = "landing.json"  # under paths.work: landed batches already decided, by name and content hash
JOURNAL = ".dvc/tmp/kdflow-update.json"  # the running update's batch, base commit and files; gone when it ends


def fingerprint(path: Path) -> str:
    """sha256 over a landed file, or over a directory's relative paths and contents."""
    digest = hashlib.sha256()
    files = [path] if path.is_file() else sorted(p for p in path.rglob("*") if p.is_file())
    for file in files:
        digest.update(str(file.relative_to(path.parent)).encode())
        digest.update(file.read_bytes())
    return digest.hexdigest()


def pending_batches(root: Path, params: Params) -> list[Path]:
    """Landed batches not accepted and not decided before (a changed batch is looked at again)."""
    landing = root / params.paths.landing
    if not landing.is_dir():
        return []
    ledger = read_json(root / params.paths.work / LEDGER) if (root / params.paths.work / LEDGER).is_file() else {}
    from kdcore.lifelong.increments import increment_name

    out = []
    for path in sorted(p for p in landing.iterdir() if not p.name.startswith(".")):
        name = increment_name(path)
        if name in params.lifelong.increments:
            continue
        if ledger.get(path.name, {}).get("sha256") == fingerprint(path):
            continue
        out.append(path)
    return out


def record(root: Path, params: Params, path: Path, status: str, reason: str) -> None:
    ledger_file = root / params.paths.work / LEDGER
    ledger = read_json(ledger_file) if ledger_file.is_file() else {}
    ledger[path.name] = {"sha256": fingerprint(path), "status": status, "reason": reason}
    write_json(ledger_file, ledger)


def with_increment(params_text: str, names: list[str]) -> str:
    """params.yaml's text with lifelong.increments set to `names` (a flow list of quoted strings, so
    YAML reads every name as a name), comments kept."""
    lines = params_text.splitlines(keepends=True)
    start = next((i for i, line in enumerate(lines) if re.match(r"lifelong:\s*(#.*)?$", line)), None)
    if start is None:
        raise ConfigError("params.yaml: no top-level lifelong section to list the increment in")
    for i in range(start + 1, len(lines)):
        line = lines[i]
        if line.strip() and not line.startswith((" ", "#")):
            break  # the next top-level key
        match = re.match(r"(\s+)increments:(\s*)([^#\n]*?)(\s*#.*)?$", line.rstrip("\n"))
        if not match:
            continue
        indent = match.group(1)
        end = i + 1
        while end < len(lines) and re.match(rf"{indent}(\s+|)- ", lines[end]) and not match.group(3):
            end += 1  # block-style items under the key
        value = "[" + ", ".join(json.dumps(n) for n in names) + "]"  # quoted: `null`, `123`, `yes` stay names
        lines[i:end] = [f"{indent}increments: {value}{match.group(4) or ''}\n"]
        return "".join(lines)
    raise ConfigError("params.yaml: lifelong has no increments key to list the increment in")


def accept_landed(params: Params, path: Path):
    """The landed batch at `path` checked and written as the next increment where params put them."""
    from kdcore.lifelong.increments import accept

    return accept(
        Path(path),
        prepared_dir=params.paths.prepared,
        increments_dir=params.paths.increments,
        accepted=params.lifelong.increments,
        seed=params.seed,
        test_share=params.lifelong.test_share,
        report_dir=params.paths.work / "validation",
        image_size=params.data.image_size,
        channels=params.data.channels,
    )


@task(name="accept-increment")
def accept_batch(root: str, path: str) -> dict[str, object]:
    """Checks the landed batch and writes it as an increment; a batch that fails its checks is an
    outcome, not an error: {"rejected": the one-line reason}."""
    params = load_params(Path(root) / "params.yaml")
    params = params.model_copy(update={"paths": _rooted(params, Path(root))})
    try:
        accepted = accept_landed(params, Path(path))
    except KdflowError as err:
        return {"rejected": f"{Path(path).name}: {err}"}
    return {"name": accepted.name, "train": accepted.train, "test": accepted.test, "classes": accepted.classes}


def _rooted(params: Params, root: Path):
    """params.paths with every relative path under `root` (the flow may run from elsewhere)."""
    return params.paths.model_copy(
        update={k: (v if Path(v).is_absolute() else root / v) for k, v in params.paths.model_dump().items()}
    )


@task(name="publish")
def publish(key: str, content: str | list[dict], description: str) -> None:
    """A markdown (text) or table (rows) artifact of this flow run."""
    if isinstance(content, str):
        create_markdown_artifact(content, key=key, description=description)
    else:
        create_table_artifact(content, key=key, description=description)


def run_tool(root: str, *cmd: str) -> str:
    result = subprocess.run(cmd, cwd=root, capture_output=True, text=True, **child_options())
    if result.returncode != 0:
        output = result.stdout + result.stderr
        raise RuntimeError(f"{' '.join(cmd[:3])} failed (exit {result.returncode}): {stage_error('update', output)}")
    return result.stdout


@task(name="dvc-repro-update")
def repro_update(root: str) -> str:
    """`dvc repro update`: the update stage and anything upstream that is out of date."""
    out = run_tool(root, "dvc", "repro", "update")
    for line in out.splitlines():
        if line.startswith("update:"):
            get_run_logger().info(line)
    return out


def updates_hash(root: Path) -> str | None:
    """The md5 of the update stage's model directory in dvc.lock: where the DVC cache keeps it."""
    lock = yaml.safe_load((root / "dvc.lock").read_text())
    outs = lock.get("stages", {}).get("update", {}).get("outs", [])
    return outs[0].get("md5") if outs else None


@task(name="roll-back")
def roll_back(root: str, paths: list[str]) -> None:
    """The workspace back to HEAD: each path restored as HEAD has it (removed if HEAD has none), then
    DVC's outputs checked out as the restored dvc.lock names them."""
    for path in paths:
        if git(root, "cat-file", "-e", f"HEAD:{path}", check=False).returncode == 0:
            git(root, "checkout", "HEAD", "--", path)
            continue
        target = Path(root) / path
        if target.is_dir():
            shutil.rmtree(target)
        elif target.exists():
            target.unlink()
    checkout = subprocess.run(["dvc", "checkout", "--force", "update"], cwd=root, capture_output=True, text=True,
                              **child_options())  # fmt: skip
    if checkout.returncode != 0:
        get_run_logger().warning(f"dvc checkout update: {stage_error('update', checkout.stdout + checkout.stderr)}")


def touched_paths(params: Params, name: str) -> list[str]:
    """Every path an update with the increment `name` writes: what it commits or rolls back."""
    increments_dir = params.paths.increments / name
    return ["params.yaml", "dvc.lock", str(params.paths.metrics / "lifelong.json"),
            str(params.paths.plots / "lifelong_matrix.png"), str(increments_dir), f"{increments_dir}.dvc",
            str(increments_dir.parent / ".gitignore")]  # fmt: skip


def committed_paths(touched: list[str], root: Path, name: str) -> list[str]:
    return [p for p in touched if not p.endswith(f"/{name}") and (root / p).exists()]


def tag_name(count: int, name: str) -> str:
    return f"student-update-{count:03d}-{name}"


def recover(root: Path, params: Params) -> str | None:
    """Finishes what a killed update left (its journal): rolls its changes back, or, if it had
    committed, tags the commit as it would have. Returns what was done, None if nothing was left."""
    journal_file = root / JOURNAL
    if not journal_file.is_file():
        return None
    journal = json.loads(journal_file.read_text())
    name, head = journal["increment"], git(str(root), "rev-parse", "HEAD").stdout.strip()
    subject = git(str(root), "log", "-1", "--format=%s").stdout
    if head == journal["head"]:
        roll_back.fn(str(root), journal["touched"])
        done = f"rolled back the interrupted update of {journal['batch']} (pid {journal['pid']}); it is tried again"
    elif subject.startswith(f"kdflow update: learn increment {name} "):
        tag = tag_name(journal["count"], name)
        if git(str(root), "rev-parse", "-q", "--verify", f"refs/tags/{tag}", check=False).returncode != 0:
            git(str(root), *identity(root), "tag", "-a", tag, "-m", f"student after increment {name}")
        record(root, params, root / params.paths.landing / journal["batch"], "promoted", f"{head} {tag}")
        done = f"finished the interrupted update of {journal['batch']}: it had committed {head[:10]}; tagged {tag}"
    else:
        raise Busy(f"{JOURNAL}: an update of {journal['batch']} was interrupted and the branch has moved since; "
                   f"check {', '.join(journal['touched'][:3])} ... and remove the journal")  # fmt: skip
    journal_file.unlink()
    return done


def identity(root: Path) -> list[str]:
    if git(str(root), "config", "user.email", check=False).stdout.strip():
        return []
    return ["-c", "user.name=kdflow pipeline", "-c", "user.email=kdflow@localhost"]


@flow(name="kdflow-lifelong-update", log_prints=True)
def lifelong_update(repo: str = "."):
    """One landed batch: check, accept, update, gate, then promote or roll back. Expected outcomes end
    in named states without a traceback: Rejected (the batch), RolledBack (the gate), Busy (not now)."""
    root = Path(repo).resolve()
    try:
        with one_run_at_a_time(root):
            return update_once(root)
    except Busy as err:
        print(f"not started: {err}")
        return Failed(name="Busy", message=str(err))


def update_once(root: Path):
    params = load_params(root / "params.yaml")
    recovered = recover(root, params)
    if recovered:
        params = load_params(root / "params.yaml")  # as the rollback left it
        print(f"recovered: {recovered}")
        publish("kdflow-update-recovered", f"# Interrupted update recovered\n\n{recovered}\n", "What a killed run left")
    pending = pending_batches(root, params)
    if not pending:
        print(f"no new batch in {params.paths.landing}")
        return {"status": "idle", "recovered": recovered}
    path = pending[0]
    from kdcore.lifelong.increments import increment_name

    name = increment_name(path)
    touched = touched_paths(params, name)
    _, _, result_dirs = read_dag(root)
    check_workspace(str(root), result_dirs)
    dirty = sorted({p for p in changed_paths(str(root)) for t in touched if p == t or p.startswith(t + "/")})
    if dirty:
        raise Busy(f"uncommitted changes to files an update commits: {', '.join(dirty[:5])}; commit or stash "
                   "them first (an update commits its own changes only)")  # fmt: skip
    head = git(str(root), "rev-parse", "HEAD").stdout.strip()
    names = [*params.lifelong.increments, name]
    journal = {"batch": path.name, "increment": name, "head": head, "touched": touched, "pid": os.getpid(),
               "count": len(names)}  # fmt: skip
    write_json(root / JOURNAL, journal)
    try:
        accepted = accept_batch(str(root), str(path))
    except BaseException:
        roll_back(str(root), touched)
        (root / JOURNAL).unlink(missing_ok=True)
        raise
    if "rejected" in accepted:
        (root / JOURNAL).unlink(missing_ok=True)
        reason = str(accepted["rejected"])
        record(root, params, path, "rejected", reason)
        publish("kdflow-increment-rejected", f"# Batch rejected\n\n{reason}\n", "A landed batch that failed its checks")
        print(f"rejected: {reason}")
        return Completed(name="Rejected", message=reason)
    increments_dir = params.paths.increments / name
    metrics_file = params.paths.metrics / "lifelong.json"
    try:
        new_text = with_increment((root / "params.yaml").read_text(), names)
        parse_params(read_yaml(new_text), source="params.yaml")  # never write a file that would not load
        write_text(root / "params.yaml", new_text)
        run_tool(str(root), "dvc", "add", "-q", str(increments_dir))
        repro_update(str(root))
    except BaseException:
        roll_back(str(root), touched)  # not recorded: the next run tries the batch again
        (root / JOURNAL).unlink(missing_ok=True)
        raise
    metrics = read_json(root / metrics_file)
    gate = metrics["gate"]
    matrix_rows = [{"after": metrics["increments"][i], **dict(zip(metrics["increments"], row, strict=True))}
                   for i, row in enumerate(metrics["matrix"])]  # fmt: skip
    publish("kdflow-lifelong-matrix", matrix_rows, "R[i][j]: accuracy after increment i on increment j's test data")
    if not gate["passed"]:
        rejected = updates_hash(root)
        roll_back(str(root), touched)
        (root / JOURNAL).unlink(missing_ok=True)
        reason = f"{gate['message']}; the rejected student is in the DVC cache as {rejected}"
        record(root, params, path, "rolled back", reason)
        publish("kdflow-update-rolled-back", f"# Update rolled back\n\n{reason}\n", "Back at the last promoted commit")
        print(f"rolled back: {reason}")
        return Completed(name="RolledBack", message=reason)
    diff = subprocess.run(["dvc", "metrics", "diff", "HEAD", "--md"], cwd=root, env=tool_env(), capture_output=True,
                          text=True)  # fmt: skip
    git(str(root), "add", "--", *committed_paths(touched, root, name))
    message = (f"kdflow update: learn increment {name} ({accepted['train']} samples) with {metrics['method']}; "
               f"flow run {flow_run.name} ({flow_run.id})\n\n{gate['message']}")  # fmt: skip
    git(str(root), *identity(root), "commit", "-m", message)
    tag = tag_name(len(names), name)
    git(str(root), *identity(root), "tag", "-a", tag, "-m", f"student after increment {name}: ACC {metrics['acc']:.4f}")
    sha = git(str(root), "rev-parse", "HEAD").stdout.strip()
    record(root, params, path, "promoted", f"{sha} {tag}")
    (root / JOURNAL).unlink(missing_ok=True)
    text = diff.stdout.strip() if diff.returncode == 0 else f"dvc metrics diff failed: {diff.stderr.strip()}"
    diff_md = f"# Metrics against the last promoted student\n\n{text or 'No metric changed.'}\n"
    publish("kdflow-update-metrics-diff", diff_md, "dvc metrics diff against the last promoted commit")
    pushed = push_artifacts(str(root)) if params.orchestration.push else "not pushed"
    print(f"promoted {name} as {sha[:10]} ({tag}): {gate['message']}; {pushed}")
    return {"status": "promoted", "increment": name, "commit": sha, "tag": tag, "gate": gate["message"],
            "acc": metrics["acc"], "forgetting": metrics["forgetting"], "push": pushed,
            "recovered": recovered}  # fmt: skip


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m flows.update", description="Run one lifelong update.")
    parser.add_argument("--repo", default=".", help="the kdflow project (default: the current directory)")
    args = parser.parse_args(argv)
    return run_flow("kdflow update", lifelong_update, repo=args.repo)


if __name__ == "__main__":
    sys.exit(main())
