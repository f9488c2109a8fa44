"""The methods comparison: stage reuse keys, the report's arithmetic and verdicts, and the CLI's errors."""

from __future__ import annotations

import pandas as pd
import pytest

from kdcore.evaluate.methods_report import render_methods_report, verdict
from kdcore.experiments.sweep import stage_keys
from tests.conftest import cli_error, tiny_raw, with_two_teachers


def test_stage_keys_change_only_where_the_params_do() -> None:
    base = with_two_teachers(tiny_raw())
    keys = stage_keys(base)
    other_loss = with_two_teachers(tiny_raw())
    other_loss["distill"]["temperature"] = 9.0
    changed = stage_keys(other_loss)
    assert [k for k in keys if keys[k] != changed[k]] == ["distill"]
    other_teacher = with_two_teachers(tiny_raw())
    other_teacher["teachers"]["mlp"]["seed"] = 7
    changed = stage_keys(other_teacher)
    differ = sorted(k for k in keys if keys[k] != changed[k])
    assert differ == ["build_transfer", "distill", "synthesize", "teacher@mlp", "teachers"]
    other_student = with_two_teachers(tiny_raw())
    other_student["student"]["model"] = {"name": "mlp", "hidden": [7]}
    changed = stage_keys(other_student)  # the pool does not depend on the student ...
    assert sorted(k for k in keys if keys[k] != changed[k]) == ["distill", "train_student_scratch"]
    adaptive, other_adaptive = with_two_teachers(tiny_raw()), other_student
    for raw in (adaptive, other_adaptive):
        raw.setdefault("synth", {})["disagreement_weight"] = 1.0
    # ... unless the disagreement terms train a proxy student of its architecture
    assert stage_keys(adaptive)["synthesize"] != stage_keys(other_adaptive)["synthesize"]


def test_verdicts() -> None:
    assert verdict(pd.Series([0.5, 1.0, 0.1])) == "helps on every seed"
    assert verdict(pd.Series([-0.5, -1.0, -0.1])) == "hurts on every seed"
    assert verdict(pd.Series([0.0, -1.0, 0.0])) == "never helps"
    assert verdict(pd.Series([0.5, -1.0, 0.0])) == "mixed"


def row(method: str, seed: int, accuracy: float, scratch: float, teacher: float, teachers: str = "cnn") -> dict:
    return {
        "method": method,
        "seed": seed,
        "teachers": teachers,
        "teacher_accuracy": teacher,
        "scratch_accuracy": scratch,
        "accuracy": accuracy,
        "gain_points": round((accuracy - scratch) * 100, 2),
        "distill_s": 10.0,
        "scratch_s": 9.0,
        "teachers_s": 30.0,
    }


def test_report_compares_the_ensemble_with_the_single_teacher_that_tests_best() -> None:
    rows = pd.DataFrame(
        [
            row("hinton", 0, 0.95, 0.92, 0.97),
            row("hinton", 1, 0.94, 0.93, 0.98),
            row("single_b", 0, 0.96, 0.92, 0.96, "cnn_b"),  # a better student from a worse teacher
            row("single_b", 1, 0.93, 0.93, 0.99, "cnn_b"),
            row("ens", 0, 0.955, 0.92, 0.985, "cnn,cnn_b"),
            row("ens", 1, 0.95, 0.93, 0.99, "cnn,cnn_b"),
        ]
    )
    labels = {"hinton": "Hinton", "single_b": "teacher b", "ens": "ensemble"}
    groups = {"hinton": "mlp", "single_b": "single", "ens": "ensemble"}
    info = {"mlp": {"reference": "hinton"}, "ensemble": {"reference": "hinton"}}
    report = render_methods_report(rows, labels, groups, "python -m flows.compare --seeds 0 1", info)
    assert "| Hinton (`hinton`) | 94.50 ± 0.71 | +2.00 (+1.0 .. +3.0) | +3.0, +1.0 |" in report
    # seed 0: the best teacher is cnn (97 > 96), so the ensemble's 95.5 is compared with 95.0
    assert "| 0 | cnn (97.0) | 95.0 | 98.5 | 95.5 | +0.5 |" in report
    # seed 1: cnn_b tests best (99 > 98): 95.0 against 93.0
    assert "| 1 | cnn_b (99.0) | 93.0 | 99.0 | 95.0 | +2.0 |" in report
    assert "Mean difference: **+1.25 points** over 2 seeds; the ensemble's student is ahead on 2 of 2." in report


def test_compare_cli_rejects_an_unknown_method_in_one_line() -> None:
    line = cli_error("flows.compare", "--methods", "hinton", "fitnets")
    assert "--methods: unknown fitnets" in line and "dkd" in line


def test_task_runner_choice() -> None:
    from prefect.task_runners import ThreadPoolTaskRunner

    from flows.pipeline import make_task_runner

    runner = make_task_runner("thread", 3)
    assert isinstance(runner, ThreadPoolTaskRunner) and runner._max_workers == 3
    try:
        import prefect_dask  # noqa: F401
    except ImportError:
        assert isinstance(make_task_runner("auto", 2), ThreadPoolTaskRunner)
        from kdcore.errors import ConfigError

        with pytest.raises(ConfigError, match="prefect-dask"):
            make_task_runner("dask", 2)
    else:
        assert type(make_task_runner("auto", 2)).__name__ == "DaskTaskRunner"


def test_teachers_tied_for_best_are_compared_through_the_mean_of_their_students() -> None:
    rows = pd.DataFrame(
        [
            row("hinton", 0, 0.94, 0.92, 0.97),
            row("single_b", 0, 0.96, 0.92, 0.97, "cnn_b"),
            row("ens", 0, 0.955, 0.92, 0.98, "cnn,cnn_b"),
        ]
    )
    groups = {"hinton": "mlp", "single_b": "single", "ens": "ensemble"}
    report = render_methods_report(rows, {k: k for k in groups}, groups, "cmd")
    assert "| 0 | cnn, cnn_b (97.0) | 95.0 (tied: mean of 2 students) | 98.0 | 95.5 | +0.5 |" in report


def test_born_again_rows_list_the_accuracy_of_each_generation() -> None:
    rows = pd.DataFrame(
        [
            {**row("ban", 0, 0.95, 0.92, 0.97), "generation_accuracies": "0.9400 0.9500"},
            {**row("ban", 1, 0.97, 0.92, 0.97), "generation_accuracies": "0.9600 0.9700"},
        ]
    )
    report = render_methods_report(rows, {"ban": "born-again"}, {"ban": "conv"}, "cmd")
    assert "`ban`, test accuracy by generation (mean over seeds): generation 1: 95.00%, generation 2: 96.00%." in report


def test_a_default_written_out_reuses_the_same_outputs(tmp_path) -> None:
    from kdcore.experiments.sweep import Sweep

    sweep = Sweep(tiny_raw(), tmp_path)
    _, implicit = sweep.params_for({}, 0, tmp_path / "runs/a/seed0")
    _, explicit = sweep.params_for({"teachers.cnn.subset": 1.0, "teachers.cnn.seed": 0}, 0, tmp_path / "runs/b/seed0")
    assert implicit == explicit


def test_hydra_overrides_give_each_method_exactly_its_params(tmp_path) -> None:
    """Every method of benchmarks/methods.yaml, sent to DVC as `-S` overrides, yields the params
    that the dotted overrides describe: dicts replaced (not merged), lists and strings intact."""
    import copy

    from dvc.utils.hydra import apply_overrides

    from flows.compare import experiment_plan, load_spec
    from kdcore.config import read_yaml
    from kdcore.experiments.sweep import set_dotted
    from tasks.experiments import hydra_overrides
    from tests.conftest import ROOT

    base = read_yaml((ROOT / "params.yaml").read_text())
    methods, _ = load_spec(ROOT / "benchmarks/methods.yaml", None)
    plans = experiment_plan(methods, [3], ROOT / "benchmarks/methods.yaml")
    assert plans[0][0] == "methods-hinton-s3"
    for name, _method, overrides, _seed in plans:
        expected = copy.deepcopy(base)
        for dotted, value in overrides.items():
            set_dotted(expected, dotted, value)
        target = tmp_path / f"{name}.yaml"
        target.write_text((ROOT / "params.yaml").read_text())
        apply_overrides(str(target), hydra_overrides(base, overrides))
        assert read_yaml(target.read_text()) == expected, name
    born_again = next(o for n, _, o, _ in plans if n == "methods-conv_born_again-s3")
    assert sorted(born_again["teachers"]) == ["conv"]


def test_datafree_benchmark_runs_are_valid_params_named_by_their_student(tmp_path) -> None:
    """Every run of benchmarks/datafree.yaml is a valid set of params; a run with its own student
    carries the student's name in its key, and the short CSV keeps the issue's columns first."""
    import yaml

    from benchmarks.datafree import COLUMNS, check_runs, planned_runs, short_rows
    from kdcore.config import read_yaml
    from kdcore.experiments.sweep import Sweep
    from tests.conftest import ROOT

    runs = planned_runs(yaml.safe_load((ROOT / "benchmarks/datafree.yaml").read_text()))
    pairs = [(run["key"], run["seed"]) for run in runs]
    assert len(pairs) == len(set(pairs))
    sweep = Sweep(read_yaml((ROOT / "params.yaml").read_text()), tmp_path)
    students = {}
    for run in runs:
        params, _ = sweep.params_for(run["overrides"], run["seed"], tmp_path / "runs" / run["key"] / "seed0")
        students[run["key"]] = params.student.model.name
    assert students["cnn_real"] == students["cnn_noise_4096x300"] == "cnn"
    assert students["real"] == students["inversion_4096x300"] == "mlp"
    bad = [{**runs[0], "overrides": {**runs[0]["overrides"], "student.model": {"name": "cnn", "channels": [8, -1]}}}]
    with pytest.raises(SystemExit, match=r"variant inversion_4096x300: student.model.channels\[1\]"):
        check_runs(bad, ROOT / "params.yaml", tmp_path)
    check_runs(runs, ROOT / "params.yaml", tmp_path)
    full = pd.DataFrame({"synth_method": ["inversion", None], "transfer_real_samples": [0, 1000],
                         "transfer_synthetic_samples": [4096, 0], "synth_steps": [300, 300], "seed": [3, 3],
                         "accuracy": [0.98, 0.97], "synthesize_s": [1500.04, 0.0],
                         "student": ["cnn", "cnn"]})  # fmt: skip
    short = short_rows(full)
    assert list(short.columns[:6]) == ["method", "images", "steps", "seed", "accuracy", "seconds"]
    assert list(short.columns) == COLUMNS
    assert short.to_dict("records")[1] == {"method": "real", "images": 1000, "steps": 0, "seed": 3,
                                           "accuracy": 0.97, "seconds": 0.0, "student": "cnn"}  # fmt: skip


def test_compare_cli_rejects_a_misspelt_key_of_a_method_before_queueing(tmp_path) -> None:
    spec = tmp_path / "bad.yaml"
    spec.write_text("methods:\n  - name: hot\n    set: {distill.temprature: 8.0}\n")
    line = cli_error("flows.compare", "--spec", str(spec), "--seeds", "0")
    assert "experiment bad-hot-s0" in line and "temprature" in line


def fake_queue(monkeypatch, states: list[dict[str, str]], alive: bool = False) -> list[tuple[str, ...]]:
    """tasks.experiments with a DVC queue that reports `states` one poll after another (the last
    repeats) and no live worker unless `alive`; returns the dvc commands it was given."""
    import tasks.experiments as experiments

    calls: list[tuple[str, ...]] = []
    polls = iter(states)
    last: dict[str, dict[str, str]] = {}

    def status(repo) -> dict[str, str]:
        last["state"] = next(polls, last.get("state", states[-1]))
        return last["state"]

    monkeypatch.setattr(experiments, "queue_status", status)
    monkeypatch.setattr(experiments, "queue_workers_alive", lambda repo: alive)
    monkeypatch.setattr(experiments, "dvc", lambda repo, *args, check=True: calls.append(args))
    return calls


def test_run_queue_starts_the_queue_again_when_its_worker_exits_with_experiments_queued(monkeypatch) -> None:
    from tasks.experiments import run_queue

    queued, one_done = {"a": "Queued", "b": "Queued"}, {"a": "Success", "b": "Queued"}
    states = [queued, queued, one_done, one_done, one_done, {"a": "Success", "b": "Success"}]
    calls = fake_queue(monkeypatch, states)
    lines: list[str] = []
    assert run_queue("repo", ["a", "b"], jobs=1, poll_s=0, log=lines.append) == {"a": "Success", "b": "Success"}
    starts = [c for c in calls if c[:2] == ("queue", "start")]
    assert len(starts) == 3  # the first start, and once after each two polls without a worker
    assert sum("starting it again" in line for line in lines) == 2


def test_run_queue_waits_while_a_worker_runs_and_gives_up_on_a_queue_that_never_starts(monkeypatch) -> None:
    from tasks.experiments import ExperimentFailed, run_queue

    queued = {"a": "Queued"}
    calls = fake_queue(monkeypatch, [queued] * 6 + [{"a": "Success"}], alive=True)
    assert run_queue("repo", ["a"], jobs=1, poll_s=0, log=lambda line: None) == {"a": "Success"}
    assert len(calls) == 1  # a live worker: no restart however long the experiment waits
    fake_queue(monkeypatch, [queued])
    with pytest.raises(ExperimentFailed, match=r"exited 3 times with a still queued"):
        run_queue("repo", ["a"], jobs=1, poll_s=0, log=lambda line: None, max_restarts=2)


MALFORMED_SPECS = {
    "methods: not a list": ("methods: hinton\n", "methods: Input should be a valid list"),
    "a method without a name": ("methods:\n  - {group: mlp}\n", "methods[0].name: required key is missing"),
    "a method that is a string": ("methods:\n  - hinton\n", "methods[0]: Input should be a valid dictionary"),
    "a misspelt key of a method": ("methods:\n  - {name: a, sett: {seed: 1}}\n", "methods[0].sett: unknown key"),
    "set that is a list": ("methods:\n  - {name: a, set: [seed, 1]}\n", "methods[0].set: Input should be a valid"),
    "a name no experiment can have": ("methods:\n  - {name: 'a b'}\n", "methods[0].name: String should match"),
    "a name given twice": ("methods:\n  - {name: a}\n  - {name: a}\n", "methods: a listed twice"),
    "a reference to no method": (
        "groups: {g: {title: G, reference: nope}}\nmethods:\n  - {name: a, group: g}\n",
        "groups.g.reference: 'nope' is not a method",
    ),
    "a group without a title": ("groups: {g: {reference: a}}\nmethods:\n  - {name: a}\n", "groups.g.title"),
    "an empty methods list": ("methods: []\n", "methods: List should have at least 1 item"),
    "not YAML": ("methods: [\n", "not valid YAML"),
    "a top-level list": ("- name: a\n", "no `methods:` list"),
}


@pytest.mark.parametrize("case", list(MALFORMED_SPECS))
def test_a_malformed_comparison_spec_is_one_line_naming_the_key(case: str, tmp_path) -> None:
    from flows.compare import load_spec
    from kdcore.errors import ConfigError

    text, expected = MALFORMED_SPECS[case]
    spec = tmp_path / "spec.yaml"
    spec.write_text(text)
    with pytest.raises(ConfigError) as info:
        load_spec(spec, None)
    message = str(info.value)
    assert expected in message and "\n" not in message and str(spec) in message, message


def test_a_spec_that_is_not_text_is_one_line(tmp_path) -> None:
    from flows.compare import load_spec
    from kdcore.errors import ConfigError

    spec = tmp_path / "spec.yaml"
    spec.write_bytes(b"\xff\xfe\x00methods")
    with pytest.raises(ConfigError, match="unreadable"):
        load_spec(spec, None)


def test_keep_others_keeps_the_rows_of_methods_not_run_and_replaces_those_run() -> None:
    import pandas as pd

    from flows.compare import merge_rows

    earlier = pd.DataFrame([{"method": m, "seed": s, "accuracy": 0.9} for m in ("a", "b", "gone") for s in (0, 1)])
    rows = [{"method": "b", "seed": 1, "accuracy": 0.95}, {"method": "c", "seed": 0, "accuracy": 0.97}]
    merged = merge_rows(earlier, rows, ["a", "b", "c"])
    assert [(r["method"], r["seed"], r["accuracy"]) for r in merged] == [
        ("a", 0, 0.9), ("a", 1, 0.9), ("b", 0, 0.9), ("b", 1, 0.95), ("c", 0, 0.97)
    ]  # fmt: skip
