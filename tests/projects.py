"""A throwaway kdflow project: the real code, dvc.yaml and tiny params, in a fresh git repo."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import yaml

from kdcore.config import parse_params
from tasks.dvc_stage import tool_env as pipeline_tool_env
from tests.conftest import ROOT, tiny_raw


def tool_env() -> dict[str, str]:
    """The pipeline's own environment for dvc and git, plus a quiet console and a git identity."""
    env = pipeline_tool_env()
    env.update(
        TQDM_DISABLE="1",
        GIT_AUTHOR_NAME="t",
        GIT_AUTHOR_EMAIL="t@example.com",
        GIT_COMMITTER_NAME="t",
        GIT_COMMITTER_EMAIL="t@example.com",
    )
    return env


def sh(repo: Path, *cmd: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    result = subprocess.run(cmd, cwd=repo, env=tool_env(), capture_output=True, text=True, timeout=900)
    log = f"{' '.join(cmd)} failed:\n{result.stdout[-3000:]}\n{result.stderr[-3000:]}"
    assert result.returncode == 0 or not check, log
    return result


def make_project(repo: Path, raw_params: dict | None = None, dvc_yaml: str | None = None) -> Path:
    """Copies the code, writes params (tiny by default) and dvc.yaml, and commits it all."""
    repo.mkdir(parents=True, exist_ok=True)
    for package in ("kdcore", "flows", "tasks"):
        shutil.copytree(ROOT / package, repo / package, ignore=shutil.ignore_patterns("__pycache__"))
    for name in (".gitignore", ".dvcignore", "prefect.yaml", "data/increments/README.md"):
        (repo / name).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy(ROOT / name, repo / name)
    (repo / "dvc.yaml").write_text(dvc_yaml if dvc_yaml is not None else (ROOT / "dvc.yaml").read_text())
    raw = raw_params or tiny_raw()
    raw.setdefault("paths", yaml.safe_load((ROOT / "params.yaml").read_text())["paths"])
    # every key written out, defaults included: DVC requires each params key dvc.yaml names to be in the file
    full = parse_params(raw).model_dump(mode="json")
    (repo / "params.yaml").write_text(yaml.safe_dump(full, sort_keys=False))
    sh(repo, "git", "init", "-q")
    sh(repo, "dvc", "init", "-q")
    sh(repo, "dvc", "config", "core.analytics", "false")
    sh(repo, "git", "add", "-A")
    sh(repo, "git", "commit", "-qm", "tiny kdflow project")
    return repo


def commit_count(repo: Path) -> int:
    return int(sh(repo, "git", "rev-list", "--count", "HEAD").stdout.strip())
