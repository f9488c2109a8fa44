"""The student architecture search (search_student): its params, its trials, budgets, pruning, resume, and
the chosen student back into distill."""

from __future__ import annotations

import copy
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pandas as pd
import pytest
import yaml

from kdcore.config import parse_params
from kdcore.errors import ConfigError
from kdcore.stages import get_stage
from tests.conftest import ROOT, shared_build, tiny_raw

SPLITS = {"teacher_train": 400, "transfer": 400, "test": 300, "validation": 200}
SEARCH = {
    "trials": 6,
    "epochs": 3,
    "startup_trials": 3,
    "prune_after": 1,
    "budget": {"max_params": 3000},  # mid-space: some students are over it
    "space": {"mlp": {"depth": [1, 2], "width": [8, 64, 8]}, "cnn": {"blocks": [1, 2], "channels": [4, 8, 4],
                                                                      "hidden": [16, 32, 16]}},
}  # fmt: skip


def search_raw(root: Path, **search: object) -> dict:
    raw = tiny_raw(root)
    raw["data"]["splits"] = SPLITS
    raw["search"] = copy.deepcopy({**SEARCH, **search})
    raw["evaluate"] = {"latency_repeats": 3}
    return raw


def _build(root: Path) -> None:
    params = parse_params(search_raw(root))
    for stage in ("check_params", "prepare", "train_teacher", "synthesize", "build_transfer"):
        get_stage(stage)(params)


@pytest.fixture(scope="module")
def transfer_ready(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A tiny project with a validation split, its teacher and cached teacher outputs (read only)."""
    return shared_build(tmp_path_factory, "search_ready", _build)


def copy_ready(ready: Path, dest: Path, **search: object):
    shutil.copytree(ready, dest, dirs_exist_ok=True)
    shutil.rmtree(dest / ".kdflow" / "search", ignore_errors=True)
    return parse_params(search_raw(dest, **search))


def trials(root: Path) -> pd.DataFrame:
    return pd.read_csv(root / "models/search/trials.csv")


def test_a_bad_space_names_its_key() -> None:
    raw = search_raw(Path("/tmp/x"))
    raw["search"]["space"]["mlp"]["width"] = [64, 8, 8]
    with pytest.raises(ConfigError, match=r"search.space.mlp.width.*low 64 is above high 8"):
        parse_params(raw)
    raw["search"]["space"]["mlp"]["width"] = [8, 60, 8]
    with pytest.raises(ConfigError, match=r"search.space.mlp.width.*not a multiple of step 8"):
        parse_params(raw)
    raw = search_raw(Path("/tmp/x"))
    raw["search"]["space"]["torchvision"] = ["resnet_nine"]
    with pytest.raises(ConfigError, match=r"search.space.torchvision.*resnet_nine"):
        parse_params(raw)
    raw = search_raw(Path("/tmp/x"), storage="notaurl")
    with pytest.raises(ConfigError, match=r"search.storage: 'notaurl' is not a database URL"):
        parse_params(raw)
    raw = search_raw(Path("/tmp/x"), prune_after=5)
    with pytest.raises(ConfigError, match=r"search.prune_after \(5\) is above search.epochs \(3\)"):
        parse_params(raw)


def test_a_tiny_search_keeps_its_budget_and_never_reads_the_test_split(transfer_ready: Path, tmp_path: Path) -> None:
    params = copy_ready(transfer_ready, tmp_path)
    shutil.rmtree(tmp_path / "data/prepared/test")  # a trial that read the test split would fail
    get_stage("search_student")(params)
    table = trials(tmp_path)
    assert set(table["status"]) <= {"complete", "pruned", "over budget"}
    distinct = table[table["duplicate_of"].isna()]
    assert distinct["status"].isin(["complete", "pruned"]).sum() == 6  # search.trials: students trained in budget
    trained = table[table["status"].isin(["complete", "pruned"])]
    assert not trained.empty and (trained["params"] <= 3000).all()
    over = table[table["status"] == "over budget"]
    assert not over.empty and (over["params"] > 3000).all() and over["epochs"].isna().all()  # never trained
    assert (table["latency_ms"] > 0).all() and (table["size_bytes"] > 0).all()
    assert table["chosen"].sum() == 1
    chosen = table[table["chosen"]].iloc[0]
    complete = table[(table["status"] == "complete") & table["feasible"]]
    assert chosen["val_accuracy"] == complete["val_accuracy"].max()  # search.choose.by: accuracy
    assert chosen["on_front"]
    student = yaml.safe_load((tmp_path / "models/search/student.yaml").read_text())
    assert student["model"] == json.loads(chosen["spec"])
    summary = json.loads((tmp_path / "metrics/search.json").read_text())["search"]
    assert summary["students_trained"] == 6 and summary["students"] == len(distinct)
    assert summary["trials"] == len(table)
    assert summary["val_accuracy"] == chosen["val_accuracy"]
    assert (tmp_path / "plots/search_front.png").stat().st_size > 0


def test_the_same_search_twice_draws_and_scores_the_same_students(transfer_ready: Path, tmp_path: Path) -> None:
    runs = []
    for name in ("a", "b"):
        get_stage("search_student")(copy_ready(transfer_ready, tmp_path / name))
        runs.append(trials(tmp_path / name)[["trial", "spec", "status", "val_accuracy", "epochs", "params"]])
    pd.testing.assert_frame_equal(runs[0], runs[1])


def test_a_pruned_trial_stops_training_where_the_pruner_says(transfer_ready: Path, tmp_path: Path) -> None:
    import optuna

    from kdcore.search import study as search_study

    params = copy_ready(transfer_ready, tmp_path, epochs=3, budget={})
    calls = []

    class Stopper(optuna.pruners.BasePruner):
        def prune(self, study, trial) -> bool:
            calls.append(trial.last_step)
            return trial.last_step >= 2

    study = optuna.create_study(direction="maximize", pruner=Stopper())
    from kdcore.stages import search_student

    data, _ = search_student.trial_data(params)
    trial = study.ask()
    line = search_study.run_one(study, trial, params.search, data, int8=False, latency=(2, 1))
    frozen = study.trials[0]
    assert frozen.state.name == "PRUNED" and frozen.user_attrs["epochs"] == 2, line
    assert calls == [1, 2] and sorted(frozen.intermediate_values) == [1, 2]


def test_a_killed_search_resumes_and_ends_as_an_uninterrupted_one(transfer_ready: Path, tmp_path: Path) -> None:
    whole = copy_ready(transfer_ready, tmp_path / "whole")
    get_stage("search_student")(whole)
    params = copy_ready(transfer_ready, tmp_path / "killed")
    path = tmp_path / "killed/params.yaml"
    path.write_text(yaml.safe_dump(params.model_dump(mode="json")))
    env = {**os.environ, "TQDM_DISABLE": "1", "PYTHONPATH": str(ROOT)}
    cmd = [sys.executable, "-m", "kdcore", "search_student", "--params", str(path)]
    process = subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=subprocess.PIPE, text=True, start_new_session=True)
    deadline = time.monotonic() + 300
    seen = 0
    while seen < 2 and time.monotonic() < deadline:  # two trials told, then a kill inside the third
        line = process.stdout.readline()
        if not line:
            break
        seen += line.startswith("search: trial")
    os.killpg(process.pid, signal.SIGKILL)
    process.wait()
    assert seen == 2, "the search ended before it could be killed"
    assert not (tmp_path / "killed/models/search/trials.csv").exists()
    result = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
    columns = ["spec", "status", "val_accuracy", "epochs"]
    resumed = trials(tmp_path / "killed")
    finished = resumed[resumed["status"] != "fail"].reset_index(drop=True)
    distinct = finished[finished["duplicate_of"].isna()]
    assert distinct["status"].isin(["complete", "pruned"]).sum() == 6 and (resumed["status"] == "fail").sum() <= 1
    pd.testing.assert_frame_equal(finished[columns], trials(tmp_path / "whole")[columns])


def test_the_chosen_student_goes_into_distill(transfer_ready: Path, tmp_path: Path) -> None:
    from kdcore.search.apply import apply_choice

    params = copy_ready(transfer_ready, tmp_path)
    get_stage("search_student")(params)
    path = tmp_path / "params.yaml"
    path.write_text("# the project's params\n" + yaml.safe_dump(params.model_dump(mode="json"), sort_keys=False))
    chosen = apply_choice(path, tmp_path / "models/search/student.yaml")
    text = path.read_text()
    assert text.startswith("# the project's params")  # comments kept
    applied = parse_params(yaml.safe_load(text))
    assert {k: v for k, v in applied.student.model.model_dump(mode="json").items() if k in chosen} == chosen
    get_stage("distill")(applied)
    made = json.loads((tmp_path / "models/student_kd/model.json").read_text())
    assert {k: made["spec"][k] for k in chosen} == chosen


def test_no_trials_writes_an_empty_search(transfer_ready: Path, tmp_path: Path) -> None:
    params = copy_ready(transfer_ready, tmp_path, trials=0)
    get_stage("search_student")(params)
    assert trials(tmp_path).empty
    assert yaml.safe_load((tmp_path / "models/search/student.yaml").read_text()) == {"model": None}
    summary = json.loads((tmp_path / "metrics/search.json").read_text())["search"]
    assert summary["trials"] == 0 and "chosen" not in summary


def test_kdflow_search_needs_trials_and_sane_workers(tmp_path: Path) -> None:
    from tests.conftest import write_params

    raw = search_raw(tmp_path, trials=0)
    write_params(tmp_path / "params.yaml", raw)
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    cmd = [sys.executable, "-m", "flows.kdflow", "search", "--repo", str(tmp_path)]
    result = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True)
    assert result.returncode == 2 and result.stderr.strip().splitlines()[-1] == (
        "kdflow search: error: search.trials is 0 in params.yaml: give --trials N (the shipped search: 40)"
    )
    result = subprocess.run([*cmd, "--workers", "0"], cwd=ROOT, env=env, capture_output=True, text=True)
    assert result.returncode == 2 and "--workers must be at least 1, got 0" in result.stderr
    result = subprocess.run([*cmd, "--trials", "-1"], cwd=ROOT, env=env, capture_output=True, text=True)
    assert result.returncode == 2 and "--trials must be 0 or more" in result.stderr
    assert yaml.safe_load((tmp_path / "params.yaml").read_text())["search"]["trials"] == 0  # nothing written
