"""Bad input a user can give: each case ends in one line naming the file, key or row, exit status 2
or 3, no traceback, and the earlier outputs stay as they were."""

from __future__ import annotations

import gzip
import shutil
import struct
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors.torch import save_file

from kdcore.__main__ import main as stage_main
from tests.conftest import tiny_raw, write_params

N = 600  # 60 per class


def images(side: int = 8) -> np.ndarray:
    return np.random.default_rng(0).integers(0, 256, (N, side, side), dtype=np.uint8)


def labels() -> np.ndarray:
    return np.arange(N) % 10


def write_idx_gz(path: Path, array: np.ndarray, ndim: int | None = None, cut: int = 0) -> None:
    ndim = array.ndim if ndim is None else ndim
    shape = (list(array.shape) + [1] * ndim)[:ndim]
    data = gzip.compress(bytes([0, 0, 0x08, ndim]) + struct.pack(f">{ndim}I", *shape) + array.tobytes())
    path.write_bytes(data[: len(data) - cut] if cut else data)


def npz_case(x: np.ndarray, y: np.ndarray):
    def make(root: Path) -> dict:
        np.savez(root / "data.npz", x=x, y=y)
        return {"data__source": "npz", "data__path": str(root / "data.npz")}

    return make


def stray_label() -> np.ndarray:
    y = labels()
    y[7] = 255
    return y


def negative_labels() -> np.ndarray:
    y = labels()
    y[::50] = -1
    return y


def object_npz(root: Path) -> dict:
    np.savez(root / "data.npz", x=np.array([np.zeros((8, 8)), "a"], dtype=object), y=np.array([0, 1]))
    return {"data__source": "npz", "data__path": str(root / "data.npz")}


def idx_dir(root: Path, **image_options) -> dict:
    folder = root / "idx"
    folder.mkdir()
    write_idx_gz(folder / "d-images-idx3-ubyte.gz", images(), **image_options)
    write_idx_gz(folder / "d-labels-idx1-ubyte.gz", labels().astype(np.uint8))
    return {"data__source": "idx", "data__path": str(folder)}


def one_class_folder(root: Path) -> dict:
    from PIL import Image

    (root / "folder" / "seven").mkdir(parents=True)
    for i in range(20):
        Image.fromarray(images()[i]).save(root / "folder" / "seven" / f"{i}.png")
    return {"data__source": "imagefolder", "data__path": str(root / "folder")}


DATA_CASES = {
    "one class (npz)": (npz_case(images(), np.zeros(N, int)), "only one class ('0')"),
    "one class (imagefolder)": (one_class_folder, "only one class ('seven')"),
    "labels of -1": (npz_case(images(), negative_labels()), "label(s) are negative (first at row 0: -1)"),
    "a label out of range": (npz_case(images(), stray_label()), "class '255' has 1 sample(s) (row(s) [7]"),
    "2x2 images": (npz_case(images(2), labels()), "images are 2x2 pixels"),
    "npz object array": (object_npz, "array 'x' is an object array"),
    "IDX .gz cut short": (lambda root: idx_dir(root, cut=40), "unreadable or cut short"),
    "IDX header with 5 dimensions": (lambda root: idx_dir(root, ndim=5), "x must be (N, D) vectors or images"),
}


@pytest.fixture(scope="module")
def good_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("good")
    assert stage_main(["prepare", "--params", str(write_params(root / "params.yaml", tiny_raw(root)))]) == 0
    return root


@pytest.mark.parametrize("case", list(DATA_CASES))
def test_data_that_cannot_be_learned_stops_prepare_in_one_line(good_run: Path, case: str, capsys) -> None:
    make, expected = DATA_CASES[case]
    before = (good_run / "data/prepared/meta.json").read_bytes()
    overrides = make(good_run)
    raw = tiny_raw(good_run, **overrides)
    raw["data"]["splits"] = {"teacher_train": 200, "transfer": 200, "test": 100}
    params = write_params(good_run / "bad.yaml", raw)
    code = stage_main(["prepare", "--params", str(params)])
    err = capsys.readouterr().err.strip().splitlines()
    assert code in (2, 3) and len(err) == 1, (code, err)
    assert err[0].startswith("kdflow prepare: error: ") and expected in err[0], err[0]
    # the earlier prepared data is untouched
    assert (good_run / "data/prepared/meta.json").read_bytes() == before


def clean_case_dirs(root: Path) -> None:
    for name in ("data.npz", "idx", "folder"):
        target = root / name
        if target.is_dir():
            shutil.rmtree(target)
        elif target.exists():
            target.unlink()


@pytest.fixture(autouse=True)
def _fresh_inputs(request) -> None:
    if "good_run" in request.fixturenames:
        clean_case_dirs(request.getfixturevalue("good_run"))


def test_cuda_without_a_gpu_is_one_line(tmp_path: Path, capsys) -> None:
    if torch.cuda.is_available():
        pytest.skip("a GPU is present")
    raw = tiny_raw(tmp_path, device="cuda")
    assert stage_main(["prepare", "--params", str(write_params(tmp_path / "p.yaml", raw))]) == 0  # no device used
    code = stage_main(["train_teacher", "--params", str(tmp_path / "p.yaml")])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and len(err) == 1 and "device: 'cuda' but no CUDA device" in err[0], err


@pytest.mark.parametrize("payload", [b"PK\x03\x04 a zip, as torch.save writes", b"\x80\x04\x95 a pickle"])
def test_weights_that_are_not_safetensors_are_one_line(tmp_path: Path, payload: bytes, capsys) -> None:
    weights = tmp_path / "resnet.pt"
    weights.write_bytes(payload)
    raw = tiny_raw(tmp_path)
    raw["student"]["model"] = {"name": "resnet18", "weights": str(weights)}
    params = write_params(tmp_path / "p.yaml", raw)
    assert stage_main(["prepare", "--params", str(params)]) == 0
    capsys.readouterr()
    code = stage_main(["train_student_scratch", "--params", str(params)])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and len(err) == 1 and f"{weights}: not a safetensors weights file" in err[0], err


def test_a_damaged_model_file_names_itself_and_how_to_recover(tmp_path: Path, capsys) -> None:
    from kdcore.checkpoint import load_model_dir
    from kdcore.errors import DataError

    model_dir = tmp_path / "model"
    model_dir.mkdir()
    (model_dir / "model.json").write_text(
        '{"spec": {"name": "mlp", "hidden": [4]}, "input_shape": [1, 8, 8], "num_classes": 10}'
    )
    save_file({"wrong": torch.zeros(2)}, str(model_dir / "model.safetensors"))
    with pytest.raises(DataError, match=r"model.safetensors: not loadable weights.*dvc checkout"):
        load_model_dir(model_dir)


@pytest.mark.parametrize(
    ("stage", "outputs"),
    [
        ("distill", ["models/student_kd", "dvclive/student_kd"]),
        ("train_student_scratch", ["models/student_scratch", "dvclive/student_scratch"]),
        ("train_teacher", ["models/teachers/cnn", "dvclive/teachers/cnn"]),
    ],
)
def test_a_full_disk_replaces_no_output_and_says_so_in_one_line(
    tiny_run: Path, tmp_path: Path, stage: str, outputs: list[str], monkeypatch, capsys
) -> None:
    """The disk fills as the model is saved (safetensors passes the OS's error on): the stage's
    git-tracked training logs used to be the failed run's already, beside the old model."""
    from safetensors import SafetensorError

    import kdcore.checkpoint
    from kdcore.artifacts import sha256_file
    from tests.conftest import copy_run

    params_file = write_params(tmp_path / "params.yaml", tiny_raw(tmp_path, student__train__epochs=2,
                                                                  teachers__cnn__train__epochs=2))  # fmt: skip
    copy_run(tiny_run, tmp_path)

    def before() -> dict[str, str]:
        return {str(p.relative_to(tmp_path)): sha256_file(p) for o in outputs for p in (tmp_path / o).rglob("*")
                if p.is_file()}  # fmt: skip

    kept = before()
    assert kept and any("dvclive" in p for p in kept)

    real_save = kdcore.checkpoint.save_model

    def full_disk(model, filename, **kwargs):
        if "models/" not in str(filename):  # the resume checkpoints under .kdflow still fit
            return real_save(model, filename, **kwargs)
        Path(filename).write_bytes(b"\0" * 64)  # the first bytes land, then the device is full
        raise SafetensorError("Error while serializing: IoError(Os { code: 28, kind: StorageFull, "
                              'message: "No space left on device" })')  # fmt: skip

    monkeypatch.setattr(kdcore.checkpoint, "save_model", full_disk)
    capsys.readouterr()
    assert stage_main([stage, "--params", str(params_file)]) == 4
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith(f"kdflow {stage}: error: no space left on the device while "), err
    assert "model.safetensors" in err[0] and "earlier outputs are kept" in err[0], err
    assert before() == kept  # model and logs: both the earlier run's
    assert not [p for o in outputs for p in (tmp_path / o).parent.iterdir() if p.name.startswith(".")]
