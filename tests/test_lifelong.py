"""Lifelong updates: metrics, exemplar memory, scenarios and every update method on tiny data."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from kdcore.errors import ConfigError
from kdcore.lifelong.memory import ExemplarMemory, herding_order
from kdcore.lifelong.methods import UPDATES, UpdateSettings, accuracy_on
from kdcore.lifelong.metrics import continual_metrics
from kdcore.lifelong.run import run_stream
from kdcore.lifelong.scenarios import Increment, StreamData, make_stream, rotate
from kdcore.models.builtin import MLP


def test_metrics_of_a_hand_built_matrix():
    matrix = [
        [0.90, 0.10, 0.00],
        [0.60, 0.80, 0.10],
        [0.50, 0.70, 0.95],
    ]
    got = continual_metrics(matrix)
    assert got["acc"] == pytest.approx((0.50 + 0.70 + 0.95) / 3)
    assert got["bwt"] == pytest.approx(((0.50 - 0.90) + (0.70 - 0.80)) / 2)
    # forgetting: best earlier accuracy minus the final one: (0.90 - 0.50) and (0.80 - 0.70)
    assert got["forgetting"] == pytest.approx((0.40 + 0.10) / 2)
    assert got["newest"] == pytest.approx(0.95)


def test_metrics_edge_cases():
    assert continual_metrics([[0.7]]) == {"acc": 0.7, "bwt": 0.0, "forgetting": 0.0, "newest": 0.7}
    # an accuracy that rose after it was learned: positive backward transfer, negative forgetting
    got = continual_metrics([[0.6, 0.0], [0.8, 0.9]])
    assert got["bwt"] == pytest.approx(0.2)
    assert got["forgetting"] == pytest.approx(-0.2)  # max over earlier rows (0.6) minus final (0.8)
    with pytest.raises(ValueError, match="square"):
        continual_metrics([[0.5, 0.5]])


def clusters(classes: int, per_class: int, seed: int, dim: int = 8) -> tuple[torch.Tensor, torch.Tensor]:
    """Well-separated Gaussian clusters as (N, dim, 1, 1) vectors."""
    g = torch.Generator().manual_seed(seed)
    centres = torch.eye(dim)[:classes] * 4.0
    y = torch.arange(classes).repeat_interleave(per_class)
    x = centres[y] + 0.5 * torch.randn(len(y), dim, generator=g)
    return x.view(len(y), dim, 1, 1), y


def tiny_data(classes: int = 4) -> StreamData:
    x, y = clusters(classes, 40, 0)
    tx, ty = clusters(classes, 20, 1)
    return StreamData(x, y, tx, ty, classes, torch.zeros(8))


def test_memory_keeps_budget_and_class_balance():
    x, y = clusters(4, 40, 0)
    for selection in ("reservoir", "herding"):
        memory = ExemplarMemory(10, selection, seed=3)
        feats = lambda v: v.flatten(1)  # noqa: E731
        memory.update(x[y < 2], y[y < 2], task=0, features=feats)
        assert len(memory) == 10 and memory.class_counts() == {0: 5, 1: 5}
        memory.update(x[y >= 2], y[y >= 2], task=1, features=feats)
        counts = memory.class_counts()
        assert len(memory) == 10 and sorted(counts) == [0, 1, 2, 3]
        assert max(counts.values()) - min(counts.values()) <= 1
        assert set(memory.task[memory.y >= 2].tolist()) == {1} and set(memory.task[memory.y < 2].tolist()) == {0}
        # every exemplar is a real sample of its class
        for xi, yi in zip(memory.x, memory.y, strict=True):
            assert any(torch.equal(xi, xj) for xj in x[y == yi])


def test_reservoir_is_seeded_and_herding_starts_at_the_mean():
    x, y = clusters(2, 50, 0)
    a, b, c = (ExemplarMemory(6, "reservoir", seed=s) for s in (1, 1, 2))
    for memory in (a, b, c):
        memory.update(x, y, task=0)
    assert torch.equal(a.x, b.x) and not torch.equal(a.x, c.x)
    features = torch.tensor([[1.0, 0.0], [0.0, 1.0], [0.7, 0.7], [1.0, 0.1]])
    order = herding_order(features, 3)
    assert order[0] == 2  # the normalised point nearest the normalised mean comes first
    assert len(set(order.tolist())) == 3


def test_memory_rejects_bad_settings():
    with pytest.raises(ConfigError, match="lifelong.selection"):
        ExemplarMemory(10, "random")
    with pytest.raises(ConfigError, match="lifelong.memory"):
        ExemplarMemory(-1)


def test_scenarios_cut_the_data():
    data = tiny_data()
    stream = make_stream("class", data, 2, seed=0)
    assert [inc.classes for inc in stream] == [(0, 1), (2, 3)]
    assert set(stream[1].y.tolist()) == {2, 3} and set(stream[1].test_y.tolist()) == {2, 3}
    batches = make_stream("batch", data, 4, seed=0)
    assert sum(len(b.y) for b in batches) == len(data.y)
    assert sum(len(b.test_y) for b in batches) == len(data.test_y)
    with pytest.raises(ConfigError, match="lifelong.increments"):
        make_stream("class", data, 3, seed=0)


def test_rotation_turns_images_and_fills_with_black():
    image = torch.zeros(1, 1, 9, 9)
    image[0, 0, 1, 4] = 1.0  # a dot above the centre
    turned = rotate(image, 90, torch.zeros(1))
    assert torch.equal(rotate(image, 0, torch.zeros(1)), image)
    assert torch.allclose(turned, torch.rot90(image, 1, dims=(2, 3)), atol=1e-5)  # counter-clockwise
    fill = torch.tensor([-0.5])
    corners = rotate(torch.full((1, 1, 8, 8), -0.5), 45, fill)
    assert torch.allclose(corners, torch.full_like(corners, -0.5), atol=1e-6)


def test_task_scenario_scores_among_the_increments_classes():
    model = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(8, 4))
    with torch.no_grad():
        model[1].weight.zero_()
        model[1].bias.copy_(torch.tensor([0.0, 1.0, 5.0, 0.0]))  # always predicts class 2 when free
    inc = Increment("t1", torch.zeros(0, 8, 1, 1), torch.zeros(0, dtype=torch.long), torch.zeros(3, 8, 1, 1),
                    torch.tensor([1, 1, 1]), (0, 1), task=0)  # fmt: skip
    assert accuracy_on(model, inc, "task", [0, 1, 2, 3], 4) == 1.0  # class 2 is not a choice in this task
    assert accuracy_on(model, inc, "class", [0, 1, 2, 3], 4) == 0.0


def make_student() -> torch.nn.Module:
    return MLP(8, [16], 4)


SETTINGS = UpdateSettings(steps=150, batch_size=16, replay_batch_size=16, lr=0.01, teacher_steps=100)


@pytest.mark.parametrize("method", UPDATES.names())
def test_every_method_learns_a_class_stream_deterministically(method):
    stream = make_stream("class", tiny_data(), 2, seed=0)
    kwargs = dict(mode="class", num_classes=4, make_student=make_student, seed=0, memory=8,
                  make_teacher=lambda: MLP(8, [32], 4))  # fmt: skip
    first = run_stream(stream, method, SETTINGS, **kwargs)
    again = run_stream(stream, method, SETTINGS, **kwargs)
    assert first.matrix == again.matrix
    assert len(first.matrix) == 2 and all(len(row) == 2 for row in first.matrix)
    assert first.matrix[0][0] > 0.9 and first.matrix[1][1] > 0.9  # each increment is learned
    assert first.matrix[0][1] == 0.0  # classes not seen yet are never predicted
    if UPDATES.get(method).replay:
        assert len(first.memory) == 8


def test_replay_and_joint_keep_what_finetuning_forgets():
    stream = make_stream("class", tiny_data(), 2, seed=0)
    kwargs = dict(mode="class", num_classes=4, make_student=make_student, seed=0, memory=8)
    finetune = run_stream(stream, "finetune", SETTINGS, **kwargs)
    replay = run_stream(stream, "lwf_replay", SETTINGS, **kwargs)
    joint = run_stream(stream, "joint", SETTINGS, **kwargs)
    assert finetune.matrix[1][0] < 0.5  # most of the first classes are gone
    assert replay.matrix[1][0] > 0.9 and joint.matrix[1][0] > 0.9
    assert finetune.metrics["forgetting"] > 0.5 > 0.1 > replay.metrics["forgetting"]


def test_lwf_keeps_the_old_task_in_the_task_scenario():
    stream = make_stream("task", tiny_data(), 2, seed=0)
    kwargs = dict(mode="task", num_classes=4, make_student=make_student, seed=0, memory=0)
    lwf = run_stream(stream, "lwf", SETTINGS, **kwargs)
    assert lwf.metrics["acc"] > 0.9


def test_a_started_stream_scores_the_first_increment_without_learning_it():
    stream = make_stream("class", tiny_data(), 2, seed=0)
    trained = run_stream(stream[:1], "finetune", SETTINGS, mode="class", num_classes=4, make_student=make_student,
                         seed=0, memory=0, keep_models=True)  # fmt: skip
    student = trained.models[0]
    before = {k: v.clone() for k, v in student.state_dict().items()}
    result = run_stream(stream, "lwf_replay", SETTINGS, mode="class", num_classes=4, make_student=make_student,
                        seed=0, memory=8, start=(student, None))  # fmt: skip
    assert result.matrix[0][0] == trained.matrix[0][0]
    assert not all(torch.equal(before[k], v) for k, v in student.state_dict().items())  # then updated in place


# --- the update stage and increments, on the tiny pipeline ----------------------------------------


@pytest.fixture(scope="module")
def pipeline(tiny_run: Path, tmp_path_factory: pytest.TempPathFactory):
    """A copy of the tiny pipeline's run: prepared data, teacher and distilled student."""
    from tests.conftest import copy_run

    return copy_run(tiny_run, tmp_path_factory.mktemp("lifelong"))


def accept_into(params, path: Path):
    """Accepts a landed batch where `params` put increments, as the update flow does."""
    from flows.update import accept_landed

    return accept_landed(params, path)


def land_from(params, batches: int, step: float, corrupt: bool) -> list[Path]:
    from kdcore.lifelong.demo import land

    return land(params.paths.prepared, params.paths.landing, params.seed, batches, step, corrupt)


def with_increments(params, names: list[str], **lifelong):
    cfg = params.lifelong.model_copy(update={"increments": names, **lifelong})
    return params.model_copy(update={"lifelong": cfg})


def test_update_stage_learns_accepted_increments(pipeline) -> None:
    import json

    from kdcore.artifacts import load_tensors, sha256_file
    from kdcore.stages import get_stage

    landed = land_from(pipeline, batches=2, step=20, corrupt=False)
    assert [p.name for p in landed] == ["rot020.npz", "rot040.npz"]
    first = accept_into(pipeline, landed[0])
    assert first.name == "rot020" and first.test >= 10 and (first.directory / "meta.json").is_file()
    params = with_increments(pipeline, ["rot020"])
    second = accept_into(params, landed[1])
    params = with_increments(params, ["rot020", "rot040"])
    get_stage("update")(params)
    metrics = json.loads((params.paths.metrics / "lifelong.json").read_text())
    assert metrics["increments"] == ["base", "rot020", "rot040"] and metrics["learned"] == 2
    assert len(metrics["matrix"]) == 3 and all(len(row) == 3 for row in metrics["matrix"])
    assert set(metrics) >= {"acc", "bwt", "forgetting", "newest", "gate"}
    assert sum(metrics["memory"].values()) == params.lifelong.memory
    updates = params.paths.updates
    assert sorted(p.name for p in updates.iterdir()) == ["001-rot020", "002-rot040", "memory.safetensors"]
    assert len(load_tensors(updates / "memory.safetensors")["y"]) == params.lifelong.memory
    assert (params.paths.plots / "lifelong_matrix.png").read_bytes()[:4] == b"\x89PNG"
    # same inputs, same bytes
    hashes = {p.name: sha256_file(p) for p in updates.rglob("*") if p.is_file()}
    get_stage("update")(params)
    assert hashes == {p.name: sha256_file(p) for p in updates.rglob("*") if p.is_file()}
    assert second.name == "rot040"


def test_a_corrupt_batch_is_rejected_and_leaves_nothing(pipeline, tmp_path: Path) -> None:
    import numpy as np

    from kdcore.errors import DataError, ValidationFailed

    corrupt = [p for p in land_from(pipeline, batches=1, step=5, corrupt=True) if p.name == "corrupt.npz"][0]
    with pytest.raises(ValidationFailed, match="nan"):
        accept_into(pipeline, corrupt)
    assert not (pipeline.paths.increments / "corrupt").exists()
    small = tmp_path / "small.npz"
    np.savez(small, x=np.zeros((10, 5, 5), dtype=np.uint8), y=np.arange(10))
    with pytest.raises(DataError, match="samples are 1x5x5, the student takes 1x8x8"):
        accept_into(pipeline, small)
    unknown = tmp_path / "unknown.npz"
    np.savez(unknown, x=np.zeros((10, 8, 8), dtype=np.uint8), y=np.full(10, 42))
    with pytest.raises(ValidationFailed, match="class_name"):
        accept_into(pipeline, unknown)
    increments = pipeline.paths.increments  # made by whichever accepted batch came first in this module, if any
    assert not any(
        p.name.startswith(("small", "unknown", ".")) for p in (increments.iterdir() if increments.is_dir() else [])
    )


def test_update_gate_on_a_matrix() -> None:
    from kdcore.gate import check_update_gate

    names = ["base", "new"]
    assert check_update_gate([[0.9]], names[:1], 0.05, 0.8).passed
    ok = check_update_gate([[0.90, 0.2], [0.88, 0.85]], names, 0.05, 0.8)
    assert ok.passed and "0.8500" in ok.message
    drop = check_update_gate([[0.90, 0.2], [0.80, 0.85]], names, 0.05, 0.8)
    assert not drop.passed and "base fell 0.1000 (0.9000 -> 0.8000)" in drop.message
    low = check_update_gate([[0.90, 0.2], [0.90, 0.70]], names, 0.05, 0.8)
    assert not low.passed and "min_newest" in low.message


def test_params_list_of_increments_is_edited_in_place() -> None:
    from flows.update import with_increment

    text = (
        "seed: 0\nlifelong:  # updates\n  method: lwf\n  increments: []   # learned in order\n  memory: 5\ngate: {}\n"
    )
    once = with_increment(text, ["a"])
    assert once == text.replace("increments: []   #", 'increments: ["a"]   #')
    block = "lifelong:\n  increments:\n  - a\n  - b\n  memory: 5\n"
    assert with_increment(block, ["a", "b", "c"]) == 'lifelong:\n  increments: ["a", "b", "c"]\n  memory: 5\n'


def test_batch_names_are_data_not_yaml() -> None:
    """Names YAML would read as null, a number, a boolean or a date stay names in params.yaml."""
    import yaml

    from flows.update import with_increment
    from kdcore.config.lifelong import LifelongConfig
    from kdcore.lifelong.increments import increment_name

    names = [increment_name(Path(f"{stem}.npz")) for stem in ("null", "123", "yes", "2026-01-01", "1e3", "~", "éte")]
    assert names == ["null", "123", "yes", "2026-01-01", "1e3", "_", "_te"]
    text = with_increment("lifelong:\n  increments: []\n", names)
    assert yaml.safe_load(text)["lifelong"]["increments"] == names
    assert LifelongConfig(increments=yaml.safe_load(text)["lifelong"]["increments"]).increments == names


def test_the_same_samples_landed_again_are_refused(tiny_run: Path, tmp_path: Path) -> None:
    """Under another name, in another order or mixed with new ones: a sample is learned once (a second
    time, its held-out share would have been trained on, and the gate's accuracy inflated)."""
    import numpy as np

    from kdcore.errors import DataError
    from tests.conftest import copy_run

    params = copy_run(tiny_run, tmp_path)
    first, second = land_from(params, batches=2, step=20, corrupt=False)
    assert accept_into(params, first).name == "rot020"
    params = with_increments(params, ["rot020"])
    old, new = np.load(first), np.load(second)
    n = len(old["y"])
    cases = {
        "again.npz": (old["x"], old["y"], n),
        "reversed.npz": (old["x"][::-1], old["y"][::-1], n),
        "mixed.npz": (np.concatenate([new["x"], old["x"][:5]]), np.concatenate([new["y"], old["y"][:5]]), 5),
    }
    for name, (x, y, shared) in cases.items():
        np.savez(params.paths.landing / name, x=x, y=y)
        with pytest.raises(DataError, match=rf"{shared} of its {len(y)} samples are in increment 'rot020'"):
            accept_into(params, params.paths.landing / name)
        assert not (params.paths.increments / name.removesuffix(".npz")).exists()
    assert accept_into(params, second).name == "rot040"  # new samples are welcome
