"""The shipped ONNX files scored as a deployment scores them: a bare onnxruntime session, the raw test
samples of the data source, and nothing but the file's own metadata for preprocessing.

    python benchmarks/deployed_raw.py [--params params.yaml]

For every `.onnx` file under `paths.exported` and `paths.quantized` it prints the accuracy so
computed beside the accuracy of its row in `metrics/summary.json`, and fails if any differs.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from kdcore.config import load_params  # noqa: E402
from kdcore.data.sources import load_source  # noqa: E402

ROWS = {"model.onnx": "onnx", "model_int8.onnx": "int8", "int8_ptq.onnx": "int8_pt2e"}  # other files: their stem


def raw_accuracy(path: Path, x: np.ndarray, labels: list[str]) -> float:
    import onnxruntime as ort

    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    info = session.get_modelmeta().custom_metadata_map
    mean = np.array(json.loads(info["kdflow.mean"]), dtype=np.float32).reshape(1, -1, 1, 1)
    std = np.array(json.loads(info["kdflow.std"]), dtype=np.float32).reshape(1, -1, 1, 1)
    (logits,) = session.run(None, {session.get_inputs()[0].name: (x - mean) / std})
    names = json.loads(info["kdflow.class_names"])
    return float(np.mean([names[k] == label for k, label in zip(logits.argmax(1), labels, strict=True)]))


def main() -> int:
    import pandas as pd

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--params", default="params.yaml")
    args = parser.parse_args()
    params = load_params(args.params)
    manifest = pd.read_csv(params.paths.prepared / "manifest.csv", dtype={"sample_id": str})
    test_ids = manifest.loc[manifest["split"] == "test", "sample_id"].tolist()
    raw = load_source(params.data.source, params.data.path, params.data.image_size, params.data.channels)
    where = {sample: i for i, sample in enumerate(raw.ids)}
    rows = [where[sample] for sample in test_ids]
    x = raw.images.numpy()[rows]
    labels = [raw.class_names[k] for k in raw.labels.numpy()[rows]]
    summary = json.loads((params.paths.metrics / "summary.json").read_text())
    print(f"test split: {len(rows)} raw samples of {params.data.source}, values in [{x.min():.3f}, {x.max():.3f}]")
    failed = 0
    for base in (params.paths.exported, params.paths.quantized):
        for path in sorted(Path(base).glob("*/*.onnx")):
            row = f"{path.parent.name}_{ROWS.get(path.name, path.stem)}"
            accuracy = raw_accuracy(path, x, labels)
            reported = summary.get(row, {}).get("accuracy")
            same = reported is not None and abs(accuracy - reported) < 1e-6
            failed += not same
            print(f"{path}: {accuracy:.4f} from raw samples; {row} in summary.json: {reported}; same: {same}")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
