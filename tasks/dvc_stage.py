"""Run one DVC stage as a Prefect task: DVC decides whether it is up to date, Prefect retries and logs."""

from __future__ import annotations

import os
import re
import subprocess
import sys
import time
from pathlib import Path

from prefect import get_run_logger, task


class StageFailed(RuntimeError):
    """A DVC stage exited non-zero; the message carries the stage's own error line."""


def tool_env() -> dict[str, str]:
    """The environment for dvc and git: this interpreter's bin directory first, analytics off."""
    env = dict(os.environ)
    env["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{env.get('PATH', '')}"
    env.setdefault("DVC_NO_ANALYTICS", "1")
    env.setdefault("GX_ANALYTICS_ENABLED", "false")
    return env


def _die_with_parent() -> None:
    """In the child, before exec: Linux sends it SIGTERM when the process that started it dies, so a
    killed flow leaves no `dvc repro` running on behind it."""
    import contextlib
    import ctypes
    import signal

    with contextlib.suppress(OSError, AttributeError):  # not Linux: the child may outlive a killed flow
        ctypes.CDLL(None, use_errno=True).prctl(1, int(signal.SIGTERM))  # PR_SET_PDEATHSIG


def child_options() -> dict[str, object]:
    """subprocess options for the flows' tools: their environment, and ending with the flow."""
    return {"env": tool_env(), "preexec_fn": _die_with_parent if sys.platform.startswith("linux") else None}


def dvc_running(repo: str | Path) -> bool:
    """Whether a DVC command holds this project's lock (`.dvc/tmp/lock`, as DVC takes it: an flock)."""
    import zc.lockfile

    path = Path(repo) / ".dvc" / "tmp" / "lock"
    if not path.parent.is_dir():
        return False
    try:
        lock = zc.lockfile.LockFile(str(path))
    except zc.lockfile.LockError:
        return True
    lock.close()
    return False


def stage_error(stage: str, output: str) -> str:
    """The most telling line of a failed stage: kdflow's one-line error, else DVC's, else the last line."""
    lines = [line.strip() for line in output.splitlines() if line.strip()]
    # `train_teacher@cnn` runs `python -m kdcore train_teacher`, whose line says `kdflow train_teacher: error:`
    own = re.compile(rf"kdflow ({re.escape(stage)}|{re.escape(stage.split('@')[0])}): error:")
    for hits in ([line for line in lines if own.search(line)], [line for line in lines if "ERROR:" in line]):
        if hits:
            return hits[0]
    return lines[-1] if lines else "no output"


@task(name="dvc-stage", tags=["dvc"], task_run_name="{stage}")
def run_stage(stage: str, repo: str) -> dict[str, object]:
    """`dvc repro --single-item <stage>`; returns whether DVC ran it or found it up to date."""
    logger = get_run_logger()
    started = time.perf_counter()
    result = subprocess.run(
        ["dvc", "repro", "--single-item", stage],
        cwd=repo,
        capture_output=True,
        text=True,
        **child_options(),
    )
    output = result.stdout + result.stderr
    for line in output.splitlines():
        if line.strip() and "it/s]" not in line and "step/s" not in line:
            logger.info(line.rstrip())
    if result.returncode != 0:
        raise StageFailed(f"stage {stage} failed (exit {result.returncode}): {stage_error(stage, output)}")
    ran = f"Running stage '{stage}'" in result.stdout
    seconds = round(time.perf_counter() - started, 2)
    logger.info(f"{stage}: {'ran' if ran else 'up to date, skipped'} in {seconds} s")
    return {"stage": stage, "ran": ran, "seconds": seconds}
