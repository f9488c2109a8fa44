"""The Prefect pipeline flow against a real (temporary) Prefect server."""

from __future__ import annotations

import asyncio
import json
import re
import subprocess
import sys
from pathlib import Path
from uuid import UUID

import pandas as pd
import pytest
import yaml

from tests.conftest import copy_repo, tiny_raw, with_two_teachers
from tests.projects import commit_count, make_project, sh, tool_env

pytestmark = pytest.mark.slow


def flow_params(**overrides: object) -> dict:
    raw = tiny_raw(**overrides)
    raw["gate"] = {"min_accuracy": 0.3, "max_drop": 0.5}
    raw["orchestration"] = {"retries": 1, "retry_delay_s": 0}
    return raw


TOY_DVC = """
stages:
  make:
    cmd: python make.py
    deps: [make.py, accuracy.txt]
    metrics:
      - metrics/summary.json:
          cache: false
  flaky:                # a foreach stage, as train_teacher@<name>: it runs as flaky@one
    foreach: [one]
    do:
      cmd: python flaky.py
      deps: [flaky.py, metrics/summary.json]
      outs:
        - flaky.txt:
            cache: false
"""

MAKE = """import json, os, sys
os.makedirs("metrics", exist_ok=True)
acc = float(open("accuracy.txt").read()) if os.path.exists("accuracy.txt") else 0.8
json.dump({"student_kd": {"accuracy": acc}}, open("metrics/summary.json", "w"))
"""

FLAKY = """import os, sys
mode = open("mode.txt").read().strip() if os.path.exists("mode.txt") else "ok"
if mode == "always" or (mode == "once" and not os.path.exists(".failed_once")):
    open(".failed_once", "w").close()
    print("kdflow flaky: error: the flaky stage broke on purpose", file=sys.stderr)
    sys.exit(2)
open("flaky.txt", "w").write("done")
"""


def toy_project(root: Path, mode: str = "ok", accuracy: float = 0.8) -> Path:
    (root / "make.py").parent.mkdir(parents=True, exist_ok=True)
    (root / "make.py").write_text(MAKE)
    (root / "flaky.py").write_text(FLAKY)
    (root / "mode.txt").write_text(mode)
    (root / "accuracy.txt").write_text(str(accuracy))
    repo = make_project(root, flow_params(), dvc_yaml=TOY_DVC)
    with open(repo / ".gitignore", "a") as fh:
        fh.write(".failed_once\n")  # the flaky stage's memory of its first failure
    sh(repo, "git", "commit", "-qam", "toy stages")
    return repo


def run_flow(repo: Path, **kwargs):
    from flows.pipeline import kd_pipeline

    return kd_pipeline(repo=str(repo), return_state=True, **kwargs)


def artifacts_of(flow_run_id: UUID) -> dict[str, object]:
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import ArtifactFilter, ArtifactFilterFlowRunId, FlowRunFilter, TaskRunFilter
    from prefect.client.schemas.sorting import ArtifactSort

    async def read():
        async with get_client() as client:
            return await client.read_artifacts(
                artifact_filter=ArtifactFilter(flow_run_id=ArtifactFilterFlowRunId(any_=[flow_run_id])),
                flow_run_filter=FlowRunFilter(),
                task_run_filter=TaskRunFilter(),
                limit=50,
                sort=ArtifactSort.CREATED_DESC,
            )

    return {a.key: a.data for a in asyncio.run(read())}


def task_run_times(flow_run_id: UUID) -> dict[str, tuple]:
    """(start, end) of each stage's task run, anywhere under the flow run (its subflow included)."""
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import FlowRunFilter, FlowRunFilterParentFlowRunId

    async def read():
        async with get_client() as client:
            children = await client.read_flow_runs(
                flow_run_filter=FlowRunFilter(parent_flow_run_id=FlowRunFilterParentFlowRunId(any_=[flow_run_id]))
            )
            runs = []
            for run_id in [flow_run_id, *(c.id for c in children)]:
                runs += await client.read_task_runs(flow_run_filter=FlowRunFilter(id={"any_": [run_id]}))
            return runs

    return {r.name: (r.start_time, r.end_time) for r in asyncio.run(read()) if r.start_time is not None}


def test_real_pipeline_completes_commits_and_publishes(prefect_server, tmp_path: Path) -> None:
    raw = with_two_teachers(flow_params())
    raw["orchestration"]["parallel"] = 2
    raw["orchestration"]["task_runner"] = "thread"
    repo = make_project(tmp_path / "kd", raw)
    before = commit_count(repo)
    state = run_flow(repo)
    assert state.is_completed(), state.message
    result = state.result()
    order = [s["stage"] for s in result["stages"]]
    teachers = ["train_teacher@cnn", "train_teacher@mlp"]
    assert sorted(order) == sorted(
        [
            "check_params",
            "prepare",
            *teachers,
            "synthesize",
            "build_transfer",
            "distill",
            "train_student_scratch",
            "evaluate",
            "export",
            "quantize",
            "update",
            "search_student",
        ]
    )
    assert all(s["ran"] for s in result["stages"])
    # the DAG order is kept, and the two independent teachers ran side by side
    times = task_run_times(state.state_details.flow_run_id)
    assert times["check_params"][1] <= times["prepare"][0]
    assert times["prepare"][1] <= min(times[t][0] for t in [*teachers, "train_student_scratch"])
    assert max(times[t][1] for t in teachers) <= times["synthesize"][0]
    assert times["synthesize"][1] <= times["build_transfer"][0]
    assert times["build_transfer"][1] <= times["distill"][0]  # the scratch baseline needs only the prepared data
    assert max(times[s][1] for s in ("train_student_scratch", "export", "quantize")) <= times["evaluate"][0]
    assert times["distill"][1] <= times["quantize"][0]
    assert times["distill"][1] <= times["update"][0]
    assert max(times["distill"][1], times["train_student_scratch"][1]) <= times["export"][0]
    (a_start, a_end), (b_start, b_end) = times[teachers[0]], times[teachers[1]]
    assert a_start < b_end and b_start < a_end, times
    assert commit_count(repo) == before + 1
    message = sh(repo, "git", "log", "-1", "--format=%B").stdout
    assert str(state.state_details.flow_run_id) in message
    assert sh(repo, "git", "status", "--porcelain").stdout.strip() == ""

    artifacts = artifacts_of(state.state_details.flow_run_id)
    assert {"kdflow-metrics", "kdflow-report", "kdflow-metrics-diff"} <= set(artifacts)
    table = artifacts["kdflow-metrics"]
    table = json.loads(table) if isinstance(table, str) else table
    models = {"teacher", "teacher/cnn", "teacher/mlp", "student_scratch", "student_kd"}
    assert models <= {row["model"] for row in table}
    assert {"student_kd_int8_pt2e", "student_kd_int4_qat"} <= {row["model"] for row in table}  # the shipped files
    assert "kdflow report" in artifacts["kdflow-report"]

    again = run_flow(repo)
    assert again.is_completed(), again.message
    assert not any(s["ran"] for s in again.result()["stages"])
    assert commit_count(repo) == before + 2
    assert "kdflow pipeline: flow run" in sh(repo, "git", "log", "-1", "--format=%s").stdout


def test_stage_that_fails_once_is_retried(prefect_server, tmp_path: Path) -> None:
    repo = toy_project(tmp_path / "toy", mode="once")
    before = commit_count(repo)
    state = run_flow(repo)
    assert state.is_completed(), state.message
    assert (repo / "flaky.txt").read_text() == "done"
    assert commit_count(repo) == before + 1


def test_stage_that_keeps_failing_fails_the_flow_without_commit(prefect_server, tmp_path: Path, capsys) -> None:
    repo = toy_project(tmp_path / "toy", mode="always")
    before = commit_count(repo)
    state = run_flow(repo)
    assert state.is_failed()
    with pytest.raises(
        Exception, match="stage flaky@one failed.*kdflow flaky: error: the flaky stage broke on purpose"
    ):
        state.result()
    assert commit_count(repo) == before
    # the command line's last line is the stage's own error, not DVC's "exited with 2"
    from flows.cli import exit_status

    assert exit_status(state, "kdflow pipeline") == 1
    last = capsys.readouterr().err.strip().splitlines()[-1]
    assert "kdflow flaky: error: the flaky stage broke on purpose" in last, last


def test_gate_violation_fails_with_both_numbers_and_no_commit(prefect_server, tmp_path: Path) -> None:
    repo = toy_project(tmp_path / "toy", accuracy=0.25)
    before = commit_count(repo)
    state = run_flow(repo)
    assert state.is_failed()
    with pytest.raises(Exception, match=r"accuracy 0\.2500 is below the floor 0\.3000"):
        state.result()
    assert commit_count(repo) == before


def test_drop_against_last_commit_fails_the_gate(prefect_server, tmp_path: Path) -> None:
    repo = toy_project(tmp_path / "toy", accuracy=0.95)
    assert run_flow(repo).is_completed()
    (repo / "accuracy.txt").write_text("0.40")
    sh(repo, "git", "commit", "-qam", "worse model")
    state = run_flow(repo)
    assert state.is_failed()
    with pytest.raises(Exception, match=r"accuracy 0\.4000 dropped 0\.5500 from the last committed 0\.9500"):
        state.result()


def test_unrelated_changes_block_the_run(prefect_server, tmp_path: Path) -> None:
    repo = toy_project(tmp_path / "toy")
    (repo / "notes.txt").write_text("work in progress")
    before = commit_count(repo)
    state = run_flow(repo)
    assert state.is_failed()
    with pytest.raises(Exception, match="unrelated.*notes.txt"):
        state.result()
    assert commit_count(repo) == before
    assert not (repo / "metrics/summary.json").exists()  # refused before any stage ran


def test_deployment_is_applied_with_its_schedule_and_a_run_completes(
    prefect_server, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from prefect.client.orchestration import get_client
    from prefect.deployments import run_deployment
    from prefect.settings import PREFECT_API_URL

    api_url = PREFECT_API_URL.value()
    monkeypatch.setenv("PREFECT_API_URL", api_url)
    repo = toy_project(tmp_path / "toy")
    before = commit_count(repo)
    env = {**tool_env(), "PREFECT_API_URL": api_url}
    for cmd in (
        ["prefect", "work-pool", "create", "kdflow-process", "--type", "process", "--overwrite"],
        ["prefect", "--no-prompt", "deploy", "--all"],
    ):
        result = subprocess.run(cmd, cwd=repo, env=env, capture_output=True, text=True, timeout=300)
        assert result.returncode == 0, f"{' '.join(cmd)}:\n{result.stdout[-2000:]}\n{result.stderr[-2000:]}"

    async def read_deployment():
        async with get_client() as client:
            return await client.read_deployment_by_name("kdflow-pipeline/nightly")

    deployment = asyncio.run(read_deployment())
    crons = [(s.schedule.cron, s.active) for s in deployment.schedules]
    assert ("0 2 * * *", True) in crons
    assert {"kdflow", "nightly"} <= set(deployment.tags)
    assert deployment.parameters == {"repo": ".", "commit": True}

    flow_run = run_deployment("kdflow-pipeline/nightly", timeout=0)
    # what `make worker` runs, polling once: it picks up the scheduled run and executes it
    worker = subprocess.run(
        ["prefect", "worker", "start", "--pool", "kdflow-process", "--run-once"],
        cwd=repo,
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert worker.returncode == 0, worker.stdout[-2000:] + worker.stderr[-2000:]

    async def read_run():
        async with get_client() as client:
            return await client.read_flow_run(flow_run.id)

    finished = asyncio.run(read_run())
    assert finished.state.is_completed(), finished.state.message
    assert commit_count(repo) == before + 1
    assert str(flow_run.id) in sh(repo, "git", "log", "-1", "--format=%B").stdout

    # the lifelong update deployment: its own schedule; a run with nothing landed completes idle
    async def read_update():
        async with get_client() as client:
            return await client.read_deployment_by_name("kdflow-lifelong-update/lifelong-update")

    update = asyncio.run(read_update())
    assert [(s.schedule.cron, s.active) for s in update.schedules] == [("30 * * * *", True)]
    assert update.parameters == {"repo": "."}
    update_run = run_deployment("kdflow-lifelong-update/lifelong-update", timeout=0)
    worker = subprocess.run(
        ["prefect", "worker", "start", "--pool", "kdflow-process", "--run-once"],
        cwd=repo, env=env, capture_output=True, text=True, timeout=600,
    )  # fmt: skip
    assert worker.returncode == 0, worker.stdout[-2000:] + worker.stderr[-2000:]

    async def read_update_run():
        async with get_client() as client:
            return await client.read_flow_run(update_run.id)

    assert asyncio.run(read_update_run()).state.is_completed()
    assert commit_count(repo) == before + 1


METHODS_SPEC = """
methods:
  - {name: hinton, group: mlp, label: Hinton KD}
  - name: hint
    group: mlp
    label: Hinton KD + hint
    set:
      distill.terms:
        - {name: ce, weight: 0.5}
        - {name: kd, weight: 0.5}
        - {name: hint, weight: 1.0, student_layers: [features.2], teacher_layers: [head.2]}
"""


def test_methods_comparison_runs_as_dvc_experiments(prefect_server, tiny_repo: Path, tmp_path: Path) -> None:
    from flows.compare import compare_methods

    repo = copy_repo(tiny_repo, tmp_path / "cmp")  # its stages ran once: experiments reuse them
    (tmp_path / "methods.yaml").write_text(METHODS_SPEC)
    options = {"spec": str(tmp_path / "methods.yaml"), "seeds": [0], "repo": str(repo), "jobs": 1,
               "reports": str(repo / "reports")}  # fmt: skip
    state = compare_methods(**options, return_state=True)
    assert state.is_completed(), state.message
    rows = pd.read_csv(repo / "reports/methods.csv")
    assert sorted(rows["experiment"]) == ["methods-hint-s0", "methods-hinton-s0"]
    # both methods share the teachers and the scratch student: the experiments took them from DVC's run
    # cache (the project's own run), and only the hint method's distillation ran again
    assert rows["scratch_accuracy"].nunique() == 1 and rows["teacher_accuracy"].nunique() == 1
    first = sh(repo, "dvc", "queue", "logs", "methods-hinton-s0").stdout
    assert "Running stage" not in first, first[-3000:]
    second = sh(repo, "dvc", "queue", "logs", "methods-hint-s0").stdout
    for stage in ("train_teacher@cnn", "train_teacher@mlp", "train_student_scratch", "build_transfer"):
        assert f"Running stage '{stage}'" not in second, second[-3000:]
    assert "Running stage 'distill'" in second
    # `dvc exp show` lists each experiment with its own params and metrics
    shown = json.loads(sh(repo, "dvc", "exp", "show", "--json").stdout)
    exps = {e["name"]: e["revs"][0]["data"] for b in shown for e in (b.get("experiments") or [])}
    terms = exps["methods-hint-s0"]["params"]["params.yaml"]["data"]["distill"]["terms"]
    assert [t["name"] for t in terms] == ["ce", "kd", "hint"]
    assert [t["name"] for t in exps["methods-hinton-s0"]["params"]["params.yaml"]["data"]["distill"]["terms"]] == [
        "ce",
        "kd",
    ]
    accuracy = exps["methods-hint-s0"]["metrics"]["metrics/summary.json"]["data"]["student_kd"]["accuracy"]
    assert rows.set_index("experiment").loc["methods-hint-s0", "accuracy"] == accuracy
    report = (repo / "reports/methods.md").read_text()
    assert "| Hinton KD (`hinton`) |" in report and "| Hinton KD + hint (`hint`) |" in report
    assert "scratch student" in report and "](methods.png)" in report
    assert (repo / "reports/methods.png").read_bytes()[:4] == b"\x89PNG"
    # the workspace is untouched, and a rerun queues nothing: the rows come from the same experiments
    assert sh(repo, "git", "status", "--porcelain", "--untracked-files=no").stdout == ""
    again = compare_methods(**options, return_state=True)
    assert again.is_completed()
    assert pd.read_csv(repo / "reports/methods.csv").equals(rows)


def test_methods_comparison_names_a_failed_experiment(prefect_server, tiny_repo: Path, tmp_path: Path) -> None:
    from flows.compare import compare_methods

    repo = copy_repo(tiny_repo, tmp_path / "bad")
    spec = tmp_path / "bad.yaml"
    # valid params, but a layer name the student does not have: the distill stage stops with its own line
    spec.write_text(
        "methods:\n  - name: badhint\n    set:\n      distill.terms: [{name: kd, weight: 1.0}, "
        "{name: hint, weight: 1.0, student_layers: [nope], teacher_layers: [head.2]}]\n"
    )
    state = compare_methods(spec=str(spec), seeds=[0], repo=str(repo), jobs=1, reports=str(repo / "reports"),
                            return_state=True)  # fmt: skip
    assert state.is_failed()
    assert "bad-badhint-s0" in state.message and re.search(r"kdflow \w+: error: .*nope", state.message), state.message


def run_update(repo: Path):
    from flows.update import lifelong_update

    return lifelong_update(repo=str(repo), return_state=True)


def test_update_flow_rejects_promotes_and_rolls_back(prefect_server, tiny_repo: Path, tmp_path: Path) -> None:
    repo = copy_repo(tiny_repo, tmp_path / "upd")  # the pipeline ran and its results are committed
    raw = yaml.safe_load((repo / "params.yaml").read_text())
    raw["lifelong"]["gate"] = {"max_drop": 0.2, "min_newest": 0.5}  # the tiny student is weak
    (repo / "params.yaml").write_text(yaml.safe_dump(raw, sort_keys=False))
    assert "Running stage 'update'" in sh(repo, "dvc", "repro").stdout  # the new gate: the update stage alone
    sh(repo, "git", "add", "-A")
    sh(repo, "git", "commit", "-qm", "a gate the tiny student can pass")
    sh(repo, sys.executable, "-m", "kdcore.lifelong.demo", "--batches", "2", "--step", "20", "--corrupt")
    head = sh(repo, "git", "rev-parse", "HEAD").stdout

    # 1. a corrupt batch (first by name) is rejected with its reason; nothing changes
    state = run_update(repo)
    assert state.name == "Rejected" and not state.is_failed(), (state.name, state.message)  # an outcome
    assert "corrupt.npz" in state.message and "nan" in state.message, state.message
    assert sh(repo, "git", "rev-parse", "HEAD").stdout == head
    assert sh(repo, "git", "status", "--porcelain").stdout.strip() == ""
    assert "corrupt.npz" in artifacts_of(state.state_details.flow_run_id)["kdflow-increment-rejected"]

    # 2. the next batch is accepted, learned, gated, committed and tagged
    state = run_update(repo)
    assert state.is_completed(), state.message
    result = state.result()
    assert result["status"] == "promoted" and result["tag"] == "student-update-001-rot020"
    assert commit_count(repo) == int(sh(repo, "git", "rev-list", "--count", head.strip()).stdout) + 1
    assert sh(repo, "git", "tag", "--list").stdout.split() == ["student-update-001-rot020"]
    assert sh(repo, "git", "status", "--porcelain").stdout.strip() == ""
    assert "up to date" in sh(repo, "dvc", "status").stdout
    params = yaml.safe_load((repo / "params.yaml").read_text())
    assert params["lifelong"]["increments"] == ["rot020"]
    assert (repo / "data/increments/rot020.dvc").is_file()
    metrics = json.loads((repo / "metrics/lifelong.json").read_text())
    assert metrics["increments"] == ["base", "rot020"] and metrics["gate"]["passed"]
    artifacts = artifacts_of(state.state_details.flow_run_id)
    assert {"kdflow-update-metrics-diff", "kdflow-lifelong-matrix"} <= set(artifacts)
    promoted = sh(repo, "git", "rev-parse", "HEAD").stdout

    # 3. a gate no update can pass: the workspace returns to the promoted commit
    params["lifelong"]["gate"] = {"max_drop": 0.0, "min_newest": 1.0}
    (repo / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    sh(repo, "git", "commit", "-qam", "a strict gate")
    promoted = sh(repo, "git", "rev-parse", "HEAD").stdout
    state = run_update(repo)
    assert state.name == "RolledBack", (state.name, state.message)
    assert "gate:" in state.message and "DVC cache as" in state.message, state.message
    assert sh(repo, "git", "rev-parse", "HEAD").stdout == promoted
    assert sh(repo, "git", "status", "--porcelain").stdout.strip() == ""
    assert yaml.safe_load((repo / "params.yaml").read_text())["lifelong"]["increments"] == ["rot020"]
    assert not (repo / "data/increments/rot040").exists()
    rejected = state.message.split("DVC cache as ")[1].split()[0]
    assert (repo / ".dvc/cache/files/md5" / rejected[:2] / rejected[2:]).is_file()
    # the promoted student's outputs are back; the strict gate (committed by the user) stays
    assert sorted(p.name for p in (repo / "models/updates").iterdir()) == ["001-rot020", "memory.safetensors"]
    assert yaml.safe_load((repo / "params.yaml").read_text())["lifelong"]["gate"]["min_newest"] == 1.0


def test_flows_refuse_beside_a_running_dvc_another_flow_or_uncommitted_edits(
    prefect_server, tiny_repo: Path, tmp_path: Path
) -> None:
    """A flow beside a `dvc repro` rolled params.yaml back under it; an update committed (or dropped) the
    user's uncommitted params edit. Now each case ends in state Busy, exit status 6, nothing changed."""
    import zc.lockfile

    from flows.cli import exit_status
    from flows.pipeline import kd_pipeline

    repo = copy_repo(tiny_repo, tmp_path / "busy")
    sh(repo, sys.executable, "-m", "kdcore.lifelong.demo", "--batches", "1", "--step", "20")
    head = sh(repo, "git", "rev-parse", "HEAD").stdout
    for lock_file, expected in ((".dvc/tmp/lock", "a DVC command is running in this project"),
                                (".dvc/tmp/kdflow-flow.lock", "another kdflow flow is running")):  # fmt: skip
        lock = zc.lockfile.LockFile(str(repo / lock_file))
        try:
            for state in (run_update(repo), kd_pipeline(repo=str(repo), return_state=True)):
                assert state.name == "Busy" and expected in state.message, (state.name, state.message)
                assert exit_status(state, "kdflow update") == 6
        finally:
            lock.close()
        assert sh(repo, "git", "status", "--porcelain").stdout.strip() == ""
    edited = (repo / "params.yaml").read_text().replace("seed: 0", "seed: 0  # the user's edit, not committed")
    (repo / "params.yaml").write_text(edited)
    state = run_update(repo)
    assert state.name == "Busy" and "uncommitted changes to files an update commits: params.yaml" in state.message
    assert (repo / "params.yaml").read_text() == edited and sh(repo, "git", "rev-parse", "HEAD").stdout == head
    assert not (repo / "data/increments/rot020").exists()


def test_a_killed_update_is_recovered_by_the_next_run(prefect_server, tiny_repo: Path, tmp_path: Path) -> None:
    """kill -9 of the update flow while `dvc repro update` runs: the child ends with it, and the next
    run rolls the killed run's changes back, says so, and goes on (it used to fail on every later run
    with UnrelatedChanges until the workspace was cleaned by hand)."""
    import os
    import time

    import psutil
    from prefect.settings import PREFECT_API_URL

    repo = copy_repo(tiny_repo, tmp_path / "killed")
    sh(repo, sys.executable, "-m", "kdcore.lifelong.demo", "--batches", "1", "--step", "20")
    head = sh(repo, "git", "rev-parse", "HEAD").stdout
    env = {**tool_env(), "PREFECT_API_URL": str(PREFECT_API_URL.value())}
    flow = subprocess.Popen([sys.executable, "-m", "flows.update", "--repo", str(repo)], env=env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)  # fmt: skip
    try:
        deadline, repro = time.time() + 240, None
        while repro is None and time.time() < deadline and flow.poll() is None:
            try:
                children = psutil.Process(flow.pid).children(recursive=True)
            except psutil.Error:  # the flow itself ended
                break
            for child in children:
                try:
                    if "repro" in " ".join(child.cmdline()):
                        repro = child
                except psutil.Error:  # it ended between the listing and the look
                    continue
            time.sleep(0.05)
        assert repro is not None, "the flow never reached `dvc repro update`"
        os.kill(flow.pid, 9)
        flow.wait(30)
        gone, alive = psutil.wait_procs([repro], timeout=30)
        assert not alive, "`dvc repro update` outlived the killed flow"
    finally:
        if flow.poll() is None:
            flow.kill()
    assert (repo / ".dvc/tmp/kdflow-update.json").is_file()
    assert "params.yaml" in sh(repo, "git", "status", "--porcelain").stdout  # what used to wedge every update

    state = run_update(repo)
    assert state.name in ("Completed", "RolledBack"), (state.name, state.message)
    recovered = artifacts_of(state.state_details.flow_run_id)["kdflow-update-recovered"]
    assert "rolled back the interrupted update of rot020.npz" in recovered
    assert not (repo / ".dvc/tmp/kdflow-update.json").exists()
    assert sh(repo, "git", "status", "--porcelain").stdout.strip() == ""
    if state.name == "Completed":
        assert state.result()["increment"] == "rot020" and sh(repo, "git", "rev-parse", "HEAD~1").stdout == head


def test_data_loader_workers_work_in_a_process_that_ran_a_flow(prefect_server, tmp_path: Path) -> None:
    """Prefect's exit hooks fail in a forked child (exit status 1 after its work): after a flow has run
    in-process, training batches read from disk still come from workers, started by a fork server."""
    import numpy as np
    import torch
    from prefect import flow

    from kdcore.batches import EpochBatches, epoch_batches, worker_context
    from kdcore.data.prepared import SplitImages
    from kdcore.data.shards import ShardedSplit, ShardWriter
    from kdcore.training import ImageSet

    @flow
    def trivial() -> int:
        return 1

    assert trivial() == 1
    assert worker_context() == "forkserver"
    writer = ShardWriter(tmp_path / "split", (1, 4, 4), torch.uint8)
    writer.add(torch.from_numpy(np.arange(40 * 16, dtype=np.uint8).reshape(40, 4, 4, 1)), torch.arange(40) % 2)
    writer.close()

    on_disk = SplitImages(ShardedSplit(tmp_path / "split"), torch.zeros(1), torch.ones(1), (1, 4, 4))
    train_set = ImageSet(on_disk, torch.arange(40) % 2, torch.zeros(1), shift=1)
    batches = EpochBatches(train_set, torch.randperm(40, generator=torch.Generator().manual_seed(0)), 8, 0, 0)
    from_workers = [b["x"] for b, _ in epoch_batches(batches, workers=2)]
    in_line = [b["x"] for b, _ in epoch_batches(batches, workers=0)]
    assert len(from_workers) == 5 and all(torch.equal(a, b) for a, b in zip(from_workers, in_line, strict=True))
