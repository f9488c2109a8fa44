"""search_student: search the student's architecture under a deployment budget (kdcore/search/).

Each trial draws a student from `search.space`, measures its ONNX file in onnxruntime (latency at batch 1
and 256 on one thread, size, parameters: int8 QDQ when the search measures int8) and, if it is within
`search.budget`, distils it from build_transfer's cached teacher outputs with distill.terms for up to
`search.epochs` epochs, scored after every epoch on the validation split (never the test split); trials
that trail stop early. With `search.trials: 0` nothing is searched and the outputs say so.

Outputs (paths.search): `trials.csv` (one row per trial: architecture, costs, validation accuracy, epochs,
seconds, status, Pareto front, choice), `student.yaml` (the chosen `student.model`: `kdflow search --apply`
copies it into params.yaml), `study.json` (the study's name and storage); `metrics/search.json` (the
chosen student and the search's counts) and `metrics/timings/search.json` (its latencies and seconds);
`plots/search_front.png`.

Workers: `kdflow search --workers N` runs N processes of this stage's trials (KDFLOW_SEARCH_ROLE=worker:
trials only, no outputs) against one study, then the stage itself; other machines join with the same
command and a shared database in `search.storage`.
"""

from __future__ import annotations

import json
import os

import yaml

from kdcore.artifacts import write_json, write_text
from kdcore.config import Params
from kdcore.data.prepared import load_meta, load_split
from kdcore.errors import ConfigError
from kdcore.losses.compose import Objective
from kdcore.runtime import resolve_device
from kdcore.search.results import choose, save_front_png, saved_by_pruning, trial_rows
from kdcore.search.space import describe
from kdcore.search.study import TrialData, open_study, run_trials, storage_url, study_name
from kdcore.transfer.pool import SYNTHETIC_FILE, calibration_images, load_view_set

ROLE_ENV = "KDFLOW_SEARCH_ROLE"  # worker: trials only
WORKERS_ENV = "KDFLOW_SEARCH_WORKERS"  # how many processes share the study on this machine
CALIBRATION_IMAGES = 64  # int8 scales for the cost measurement; the file's layout does not depend on them


def run(params: Params) -> None:
    cfg, paths = params.search, params.paths
    if cfg.trials == 0:
        write_outputs(params, None, None, {"trials": 0})
        print("search_student: search.trials is 0: no search (set it, then `kdflow search`)")
        return
    prepared = load_meta(paths.prepared)
    if not prepared.meta["sizes"].get("validation", 0):
        raise ConfigError("search: trials are scored on the validation split, but data.splits.validation is 0")
    objective = Objective([t.model_dump(mode="json") for t in params.distill.terms], params.distill.temperature)
    if objective.needs_teacher_features:
        raise ConfigError(
            "search: distill.terms has feature terms, which name student layers that a searched architecture "
            "does not have; search with response terms (ce, kd, dkd)"
        )
    data, int8 = trial_data(params, objective)
    url = storage_url(cfg.storage, paths.work)
    defining = {
        "search": cfg.model_dump(mode="json", exclude={"trials", "storage", "choose"}),
        "seed": params.seed,
        "data": prepared.meta["sha256"],
        "teachers": {name: t.model_dump(mode="json") for name, t in params.teachers.items()},
        "transfer": params.transfer.model_dump(mode="json"),
        "train": params.student.train.model_dump(mode="json"),
        "distill": params.distill.model_dump(mode="json"),
        "int8": int8,
    }
    name = study_name(defining)
    study = open_study(url, name, cfg, only_worker=os.environ.get(WORKERS_ENV, "1") == "1")
    ran = run_trials(study, cfg, data, int8, (params.evaluate.latency_repeats, params.evaluate.latency_threads))
    if os.environ.get(ROLE_ENV) == "worker":
        print(f"search_student: worker ran {ran} trials of study {name}")
        return
    write_outputs(params, study, name, {"trials": cfg.trials, "storage": safe_url(url), "int8": int8})


def trial_data(params: Params, objective: Objective | None = None) -> tuple[TrialData, bool]:
    """What every trial trains on and is measured with, and whether the int8 file is the one measured."""
    cfg, paths = params.search, params.paths
    if objective is None:
        objective = Objective([t.model_dump(mode="json") for t in params.distill.terms], params.distill.temperature)
    prepared = load_meta(paths.prepared)
    validation = load_split(paths.prepared, "validation")
    views, pool = load_view_set(
        paths.transfer, paths.prepared, paths.synthetic / SYNTHETIC_FILE, params.distill.topk_rest
    )
    views.render_all()
    int8 = cfg.runtime == "int8" or (cfg.runtime == "auto" and params.export.int8)
    data = TrialData(
        views=views,
        validation=(validation.x, validation.y),
        input_shape=prepared.input_shape,
        num_classes=prepared.num_classes,
        calibration=calibration_images(pool, CALIBRATION_IMAGES, "search calibration"),
        objective=objective,
        train=params.student.train.model_copy(update={"epochs": cfg.epochs}),
        seed=params.seed + cfg.seed,
        device=resolve_device(params.device),
        workers=params.data.workers,
    )
    return data, int8


def safe_url(url: str) -> str:
    """The storage URL without a password."""
    if "@" in url and "://" in url:
        scheme, rest = url.split("://", 1)
        return f"{scheme}://***@{rest.split('@', 1)[1]}"
    return url


def write_outputs(params: Params, study, name: str | None, info: dict) -> None:
    cfg, paths = params.search, params.paths
    frame = trial_rows(study.get_trials(deepcopy=False) if study is not None else [])
    chosen = choose(frame, cfg.choose)
    distinct = frame[frame["duplicate_of"].isna()] if len(frame) else frame
    students = int(len(distinct))  # distinct architectures
    trained = int(distinct["status"].isin(["complete", "pruned"]).sum()) if len(frame) else 0
    summary: dict = {"trials": int(len(frame)), "students": students, "students_trained": trained}
    if chosen is not None:
        frame.loc[chosen, "chosen"] = True
        row = frame.loc[chosen]
        spec = json.loads(row["spec"])
        summary.update({
            "chosen_trial": int(row["trial"]), "chosen": row["student"],
            "val_accuracy": round(float(row["val_accuracy"]), 6),
            "params": int(row["params"]), "size_bytes": int(row["size_bytes"]),
            "latency_ms": float(row["latency_ms"]), "latency_ms_b256": float(row["latency_ms_b256"]),
        })  # fmt: skip
        header = (
            f"# The student chosen by search_student (study {name}, trial {int(row['trial'])}, rule "
            f"{cfg.choose.by}): validation accuracy {row['val_accuracy']:.4f}, {row['latency_ms']:.4f} ms at "
            f"batch 1, {int(row['size_bytes']):,} bytes ({'int8' if info.get('int8') else 'fp32'} ONNX).\n"
            "# `kdflow search --apply` copies this into params.yaml's student.model.\n"
        )
        student = header + yaml.safe_dump({"model": spec}, sort_keys=False, default_flow_style=None)
    else:
        reason = "search.trials is 0" if study is None else "no trial was both within budget and trained to the end"
        student = f"# No student chosen: {reason}.\nmodel: null\n"
    counts = frame["status"].value_counts().to_dict()
    summary.update({f"trials_{k.replace(' ', '_')}": int(v) for k, v in sorted(counts.items())})
    summary.update(saved_by_pruning(frame, cfg.epochs))
    trained = frame[frame["duplicate_of"].isna()]  # a repeated architecture reused its result: no seconds
    seconds = float(trained["train_seconds"].fillna(0).sum()) if len(trained) else 0.0
    paths.search.mkdir(parents=True, exist_ok=True)
    write_text(paths.search / "trials.csv", frame.to_csv(index=False, float_format="%.6g"))
    write_text(paths.search / "student.yaml", student)
    write_json(paths.search / "study.json", {"study": name, **info})
    measured = {k: summary.pop(k) for k in list(summary) if k.startswith(("latency", "pruned_seconds"))}
    write_json(paths.metrics / "search.json", {"search": summary})  # the same bytes for the same trials
    write_json(paths.metrics / "timings" / "search.json", {"search": {**measured, "train_seconds": round(seconds, 1)}})
    title = f"student search: {len(frame)} trials" + (f", chosen {describe(spec)}" if chosen is not None else "")
    save_front_png(paths.plots / "search_front.png", frame, cfg.budget, title)
    print(f"search_student: {summary.get('chosen', 'no student chosen')} -> {paths.search}")
