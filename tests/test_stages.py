"""Each stage on a few hundred digits: the files it writes, and the data checks that stop it."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch

from kdcore.artifacts import load_tensors
from kdcore.checkpoint import load_model_dir
from kdcore.config import parse_params
from kdcore.errors import ConfigError, DataError, ValidationFailed
from kdcore.inference import predict_logits
from kdcore.omitted import GRID
from kdcore.stages import STAGE_NAMES, get_stage
from kdcore.transfer.ensemble import combine_logits
from tests.conftest import copy_run, prepared_tensors, tiny_raw, with_two_teachers


def run_all(params, skip: tuple[str, ...] = ()) -> None:
    for name in STAGE_NAMES:
        if name not in skip:
            get_stage(name)(params)


def run_stages(params, *names: str) -> None:
    for name in names:
        get_stage(name)(params)


def test_every_stage_writes_its_outputs(tiny_run: Path) -> None:
    tmp_path = tiny_run  # every stage of the tiny params, run once for the session
    manifest = pd.read_csv(tmp_path / "data/prepared/manifest.csv")
    assert len(manifest) == 1100 and manifest["sample_id"].is_unique
    assert manifest.groupby("split").size().to_dict() == {"teacher_train": 400, "test": 300, "transfer": 400}
    meta = json.loads((tmp_path / "data/prepared/meta.json").read_text())
    assert meta["input_shape"] == [1, 8, 8] and meta["num_classes"] == 10
    train = prepared_tensors(tmp_path / "data/prepared", "teacher_train")
    assert abs(float(train["x"].mean())) < 1e-3 and abs(float(train["x"].std()) - 1) < 1e-2  # normalised

    views = load_tensors(tmp_path / "data/transfer/views.safetensors")
    logits = load_tensors(tmp_path / "data/transfer/teacher_logits.safetensors")["logits"]
    assert len(views["src"]) == 800 and logits.shape == (800, 10)
    assert views["dx"][::2].eq(0).all() and views["dy"][::2].eq(0).all()  # view 0 is the sample itself

    for model in ("teachers/cnn", "student_kd", "student_scratch"):
        assert (tmp_path / "models" / model / "model.safetensors").is_file()
        assert (tmp_path / "dvclive" / model / "plots" / "metrics" / "eval" / "accuracy.tsv").is_file()
    assert not (tmp_path / ".kdflow" / "checkpoints" / "train_teacher@cnn").exists()  # cleared on success

    summary = json.loads((tmp_path / "metrics/summary.json").read_text())
    keys = {"accuracy", "nll", "ece", "agreement", "params", "size_bytes"}
    latency = json.loads((tmp_path / "metrics/timings/evaluate.json").read_text())
    assert set(latency) == {"teacher", "teacher/cnn", "student_scratch", "student_kd"}
    assert all(set(m) == {"latency_ms_b1", "latency_ms_b256"} for m in latency.values())
    for model in ("teacher_cnn", "student_kd", "student_scratch"):  # training seconds, apart from the logs
        timing = json.loads((tmp_path / "metrics/timings" / f"{model}.json").read_text())
        assert timing["epochs"] >= 1 and timing["train_seconds"] > 0, model
    shipped = {f"student_kd_{kind}" for kind in ("onnx", "int8", "int8_pt2e", "int8_qat", "int4", "int4_qat")}
    assert set(summary) == {"teacher", "teacher/cnn", "student_scratch", "student_kd", "transfer_set", *shipped}
    for name in shipped:  # the exported and quantized files' rows, merged by evaluate
        assert keys <= set(summary.pop(name)), name
    assert summary.pop("transfer_set") == {
        "real_samples": 400,
        "synthetic_samples": 0,
        "views_per_sample": 2,
        "scratch_samples": 400,
    }
    assert summary["teacher"] == summary["teacher/cnn"]
    assert all(set(m) == keys for m in summary.values())
    assert summary["teacher"]["agreement"] == 1.0
    assert summary["teacher"]["accuracy"] > 0.5  # 6 epochs on 400 digits: far above chance (0.1)
    assert summary["student_kd"]["params"] < summary["teacher"]["params"]
    per_class = json.loads((tmp_path / "metrics/per_class.json").read_text())
    assert set(per_class) == {"teacher", "teacher/cnn", "student_scratch", "student_kd"}
    test_y = prepared_tensors(tmp_path / "data/prepared", "test")["y"]
    counts = torch.bincount(test_y, minlength=10).double()
    for model, by_class in per_class.items():
        assert len(by_class) == 10
        weighted = sum(counts[k] * acc for k, acc in enumerate(by_class.values())) / counts.sum()
        assert abs(float(weighted) - summary[model]["accuracy"]) < 1e-4, model
    report = (tmp_path / "reports/report.md").read_text()
    assert "student (distilled)" in report and "points" in report and "per_class_accuracy.png" in report
    assert "(one test image is 0.33 points)" in report  # the gain's resolution on a 300-image test split
    assert "latency.md" in report and "(ms)" not in report  # measured times are in latency.md only
    latency_report = (tmp_path / "reports/latency.md").read_text()
    assert "faster than the teacher cnn" in latency_report and "`student_kd_int8_qat`" in latency_report
    assert "`student_kd_int4_qat`: int4 weights QAT + KD" in report
    for png in ("confusion.png", "training_curves.png", "per_class_accuracy.png", "synthetic_samples.png"):
        assert (tmp_path / "plots" / png).read_bytes()[:4] == b"\x89PNG"
    confusion = pd.read_csv(tmp_path / "plots/confusion.csv")
    assert list(confusion.columns) == ["actual", "predicted"] and len(confusion) == 300
    assert "checks passed" in (tmp_path / "reports/validation/build_transfer.html").read_text()


def test_same_seed_same_metrics(tiny_run: Path, tmp_path: Path) -> None:
    """Deterministic on CPU: two full runs in different directories agree on every quality metric."""
    run_all(parse_params(tiny_raw(tmp_path)))
    # the same bytes: latencies live in metrics/timings/
    assert (tmp_path / "metrics/summary.json").read_bytes() == (tiny_run / "metrics/summary.json").read_bytes()


def test_transfer_cache_is_reused(tiny_run: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    params = copy_run(tiny_run, tmp_path)
    first = load_tensors(tmp_path / "data/transfer/teacher_logits.safetensors")["logits"]
    capsys.readouterr()
    get_stage("build_transfer")(params)
    assert "from cache" in capsys.readouterr().out
    assert torch.equal(first, load_tensors(tmp_path / "data/transfer/teacher_logits.safetensors")["logits"])


def test_unlabeled_transfer_set(tiny_run: Path, tmp_path: Path) -> None:
    params = copy_run(tiny_run, tmp_path, transfer__labeled=False, transfer__include_teacher_train=True)
    get_stage("build_transfer")(params)
    views = load_tensors(tmp_path / "data/transfer/views.safetensors")
    assert len(views["y"]) == 1600
    assert views["y"][:800].eq(-1).all() and views["y"][800:].ge(0).all()


def test_bad_pixels_stop_prepare_with_a_report(tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    x = rng.random((200, 6, 6)).astype(np.float32)
    x[17, 2, 2] = 3.5  # out of the [0, 1] range
    x[30, 0, 0] = np.nan
    np.savez(tmp_path / "bad.npz", x=x, y=np.arange(200) % 4)
    raw = tiny_raw(tmp_path, data__source="npz", data__path=str(tmp_path / "bad.npz"))
    raw["data"]["splits"] = {"teacher_train": 80, "transfer": 60, "test": 60}
    with pytest.raises(ValidationFailed) as info:
        get_stage("prepare")(parse_params(raw))
    message = str(info.value)
    assert "pixel_max" in message and "pixel_nan" in message and "prepare.html" in message
    report = (tmp_path / "reports/validation/prepare.html").read_text()
    assert "FAIL" in report and "pixel_max" in report
    assert not (tmp_path / "data/prepared").exists()  # nothing written


def test_imbalanced_classes_stop_prepare_naming_the_rare_class(tmp_path: Path) -> None:
    rng = np.random.default_rng(1)
    y = np.array([0] * 180 + [1] * 10 + [2] * 10)
    np.savez(tmp_path / "skew.npz", x=rng.random((200, 6, 6)).astype(np.float32), y=y)
    raw = tiny_raw(tmp_path, data__source="npz", data__path=str(tmp_path / "skew.npz"))
    raw["data"]["splits"] = {"teacher_train": 80, "transfer": 60, "test": 60}
    with pytest.raises(DataError, match=r"class '1' has 10 sample\(s\) \(row\(s\) \[180, 181, 182\].*at least 33"):
        get_stage("prepare")(parse_params(raw))


def test_unconfident_teacher_fails_the_soft_label_check(tiny_run: Path, tmp_path: Path) -> None:
    params = copy_run(tiny_run, tmp_path, transfer__min_mean_confidence=0.999)
    shutil.rmtree(tmp_path / "data/transfer")  # as DVC removes a stage's outputs before it runs
    with pytest.raises(ValidationFailed, match="confidence"):
        get_stage("build_transfer")(params)
    assert not (tmp_path / "data/transfer/views.safetensors").exists()
    assert "FAIL" in (tmp_path / "reports/validation/build_transfer.html").read_text()


def test_ensemble_of_two_teachers_is_built_evaluated_and_reported(tiny_run: Path, tmp_path: Path) -> None:
    params = copy_run(tiny_run, tmp_path, with_two_teachers(tiny_raw(tmp_path), method="confidence"))
    get_stage("train_teacher")(params, teacher="mlp")  # the cnn teacher is the tiny run's
    run_stages(params, "build_transfer", "distill", "evaluate")
    stored = load_tensors(tmp_path / "data/transfer/teacher_logits.safetensors")
    members = torch.stack([stored["teacher/cnn"], stored["teacher/mlp"]])
    assert torch.allclose(stored["logits"], combine_logits(members, "confidence"))
    assert not torch.allclose(stored["teacher/cnn"].softmax(1), stored["teacher/mlp"].softmax(1), atol=1e-3)
    model = json.loads((tmp_path / "models/teachers/mlp/model.json").read_text())
    assert model["config"]["train_samples"] == 320  # subset 0.8 of 400

    summary = json.loads((tmp_path / "metrics/summary.json").read_text())
    models = {"teacher", "teacher/cnn", "teacher/mlp", "student_scratch", "student_kd"}
    assert models <= set(summary) and {k for k in summary if k not in models} <= {"transfer_set"} | {
        k for k in summary if k.startswith("student_kd_")
    }
    team, cnn, mlp = summary["teacher"], summary["teacher/cnn"], summary["teacher/mlp"]
    assert team["params"] == cnn["params"] + mlp["params"]
    assert team["size_bytes"] == cnn["size_bytes"] + mlp["size_bytes"]
    assert team["agreement"] == 1.0 and cnn["agreement"] < 1.0
    report = (tmp_path / "reports/report.md").read_text()
    assert "| teacher cnn |" in report and "| teacher mlp |" in report and "| ensemble (confidence of 2) |" in report


def test_born_again_generations_each_learn_from_the_last(
    tiny_run: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    params = copy_run(tiny_run, tmp_path, distill__generations=3)
    run_stages(params, "distill", "evaluate")
    out = capsys.readouterr().out
    assert all(f"generation {g} of 3" in out for g in (1, 2, 3))
    config = json.loads((tmp_path / "models/student_kd/model.json").read_text())["config"]
    assert [g["generation"] for g in config["generations"]] == [1, 2, 3]
    assert config["distill"]["generations"] == 3


def test_feature_terms_run_through_the_distill_stage(tiny_run: Path, tmp_path: Path) -> None:
    raw = tiny_raw(tmp_path)
    raw["distill"]["terms"] = [
        {"name": "ce", "weight": 0.5},
        {"name": "kd", "weight": 0.5},
        {"name": "hint", "weight": 1.0, "student_layers": ["features.2"], "teacher_layers": ["head.2"]},
    ]
    params = copy_run(tiny_run, tmp_path, raw)
    shutil.rmtree(tmp_path / "dvclive/student_kd")
    run_stages(params, "distill", "evaluate")
    model = json.loads((tmp_path / "models/student_kd/model.json").read_text())
    assert model["config"]["distill"]["terms"][2]["name"] == "hint"
    weights = load_tensors(tmp_path / "models/student_kd/model.safetensors")
    assert not any(k.startswith(("aux", "student.")) for k in weights)  # the regressor is not kept
    live = tmp_path / "dvclive/student_kd/plots/metrics/train/loss_hint.tsv"
    assert live.is_file()


def test_an_unknown_layer_stops_distill_before_training(tiny_run: Path, tmp_path: Path) -> None:
    raw = tiny_raw(tmp_path)
    raw["distill"]["terms"] = [{"name": "hint", "student_layers": ["features.2"], "teacher_layers": ["head.9"]}]
    params = copy_run(tiny_run, tmp_path, raw)
    shutil.rmtree(tmp_path / "models/student_kd")  # as DVC removes a stage's outputs before it runs
    with pytest.raises(ConfigError) as info:
        get_stage("distill")(params)
    assert "teacher (hint term) has no layer 'head.9'" in str(info.value) and "head.2" in str(info.value)
    assert not (tmp_path / "models/student_kd").exists()
    assert not (tmp_path / ".kdflow/checkpoints/distill").exists()


def test_train_teacher_rejects_an_unknown_teacher(tmp_path: Path) -> None:
    params = parse_params(tiny_raw(tmp_path))
    with pytest.raises(ConfigError, match="--teacher 'big': not in params teachers \\(cnn\\)"):
        get_stage("train_teacher")(params, teacher="big")


def test_a_validation_split_is_carved_without_moving_the_others(tmp_path: Path) -> None:
    get_stage("prepare")(parse_params(tiny_raw(tmp_path / "a")))
    raw = tiny_raw(tmp_path / "b")
    raw["data"]["splits"]["validation"] = 200
    params = parse_params(raw)
    run_all(params, skip=("export", "quantize", "update"))  # val_accuracy is evaluate's
    for split in ("teacher_train", "transfer", "test"):
        same = [prepared_tensors(tmp_path / run / "data/prepared", split)["y"] for run in ("a", "b")]
        assert torch.equal(*same)
    manifest = pd.read_csv(tmp_path / "b/data/prepared/manifest.csv")
    assert manifest.groupby("split").size()["validation"] == 200 and manifest["sample_id"].is_unique
    summary = json.loads((tmp_path / "b/metrics/summary.json").read_text())
    assert all(0.0 <= summary[m]["val_accuracy"] <= 1.0 for m in ("teacher", "student_kd", "student_scratch"))


def test_the_scratch_baseline_leaves_out_the_classes_the_distilled_student_never_sees(
    tiny_run: Path, tmp_path: Path
) -> None:
    params = copy_run(tiny_run, tmp_path, transfer__exclude_classes=[3], data__splits__validation=200)
    run_stages(params, "prepare", "build_transfer", "distill", "train_student_scratch", "evaluate")
    transfer_y = prepared_tensors(tmp_path / "data/prepared", "transfer")["y"]
    threes = int((transfer_y == 3).sum())
    config = json.loads((tmp_path / "models/student_scratch/model.json").read_text())["config"]
    assert config["samples"] == 400 - threes and config["transfer"]["exclude_classes"] == ["3"]
    pool = load_tensors(tmp_path / "data/transfer/pool.safetensors")
    assert len(pool["y"]) == 400 - threes and not bool((pool["y"] == 3).any())
    scratch = (tmp_path / "models/student_scratch/model.safetensors").read_bytes()
    assert scratch != (tiny_run / "models/student_scratch/model.safetensors").read_bytes()  # it never saw a 3
    summary = json.loads((tmp_path / "metrics/summary.json").read_text())
    assert summary["transfer_set"]["scratch_samples"] == summary["transfer_set"]["real_samples"] == 400 - threes
    report = (tmp_path / "reports/report.md").read_text()
    assert "Both students' data left out class 3 (`transfer.exclude_classes`)." in report

    # the omitted class's bias correction: chosen on the validation split, shipped only if better there
    choice = json.loads((tmp_path / "models/student_kd/model.json").read_text())["config"]["omitted_bias"]
    assert choice["chosen_on"] == "validation" and choice["bias"] in GRID
    assert choice["val_accuracy_corrected"] >= choice["val_accuracy_uncorrected"]
    assert choice["shipped"] == (choice["val_accuracy_corrected"] > choice["val_accuracy_uncorrected"])
    model, _ = load_model_dir(tmp_path / "models/student_kd")
    val = prepared_tensors(tmp_path / "data/prepared", "validation")
    logits = predict_logits(model, val["x"])
    ships = choice["shipped"] and choice["bias"] > 0
    shipped_accuracy = choice["val_accuracy_corrected"] if ships else choice["val_accuracy_uncorrected"]
    assert float((logits.argmax(1) == val["y"]).float().mean()) == pytest.approx(shipped_accuracy, abs=1e-9)
    row = summary["omitted_classes"]
    test_y = prepared_tensors(tmp_path / "data/prepared", "test")["y"]
    assert row["omitted_test_samples"] == int((test_y == 3).sum())
    assert summary["student_kd"]["accuracy"] == row["distilled_corrected" if ships else "distilled_uncorrected"]
    assert row["scratch"] == summary["student_scratch"]["accuracy"]
    assert row["scratch_omitted"] == 0.0  # a student trained on hard labels without a 3 never says 3
    assert f"raised by +{choice['bias']:g}" in report and "| distilled, uncorrected |" in report


def test_data_read_on_demand_gives_the_same_models_as_data_in_memory(
    tiny_run: Path, tmp_path: Path, monkeypatch
) -> None:
    """Every split and the synthetic pool read from disk batch by batch (as data larger than memory is),
    the training batches by the default 2 DataLoader workers, train the same teacher and students, byte
    for byte, as the same data held in memory and batched in the stage's process."""
    import kdcore.data.prepared
    from kdcore.artifacts import sha256_file
    from kdcore.data.prepared import SplitImages, load_split
    from tests.conftest import _run_every_stage

    monkeypatch.setattr(kdcore.data.prepared, "IN_MEMORY_BYTES", 0)
    assert isinstance(load_split(tiny_run / "data/prepared", "test").x, SplitImages)
    _run_every_stage(tmp_path)
    for model in ("models/teachers/cnn", "models/student_kd", "models/student_scratch"):
        assert sha256_file(tmp_path / model / "model.safetensors") == sha256_file(
            tiny_run / model / "model.safetensors"
        )
    assert (tmp_path / "metrics/summary.json").read_text() == (tiny_run / "metrics/summary.json").read_text()
