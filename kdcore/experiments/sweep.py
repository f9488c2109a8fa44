"""Run the real pipeline stages for many variants of the params and seeds, reusing what they share.

A variant is a name and dotted overrides of params.yaml (`{"distill.temperature": 4.0}`). For each
(variant, seed) the stages run in a scratch workspace; each stage's output lives under a key made
of exactly the params it reads, as dvc.yaml declares them (read from dvc.yaml), so a teacher, a transfer set or a
scratch student that several variants share is trained once. Each run ends with the real
`evaluate` stage; its metrics and the training time of each model make one row.
"""

from __future__ import annotations

import copy
import hashlib
import json
import time
from collections.abc import Callable, Iterator
from functools import cache
from pathlib import Path
from typing import Any

import yaml

from kdcore.artifacts import read_json, write_json
from kdcore.config import Params, parse_params, read_yaml
from kdcore.evaluate.methods_report import summary_columns
from kdcore.stages import get_stage

DVC_YAML = Path(__file__).resolve().parents[2] / "dvc.yaml"


def set_dotted(raw: dict, key: str, value: Any) -> None:
    """raw["a"]["b"] = value for key "a.b"; missing levels are created."""
    node = raw
    *parents, leaf = key.split(".")
    for part in parents:
        node = node.setdefault(part, {})
    node[leaf] = value


def key_of(value: Any) -> str:
    return hashlib.sha256(json.dumps(value, sort_keys=True, default=str).encode()).hexdigest()[:16]


MISSING = "<unset>"  # a declared param the params leave out


def lookup(raw: dict, dotted: str) -> Any:
    """raw's value at "a.b.c", or MISSING."""
    node: Any = raw
    for part in dotted.split("."):
        if not isinstance(node, dict) or part not in node:
            return MISSING
        node = node[part]
    return node


@cache
def pipeline_spec(dvc_yaml: Path = DVC_YAML) -> dict[str, dict[str, list[str]]]:
    """{stage: {"params": [...], "deps": [...], "outs": [...]}} as dvc.yaml declares them (a foreach
    stage's `do` block, `${key}` left in); the one list of which params each stage reads."""
    stages = yaml.safe_load(dvc_yaml.read_text(encoding="utf-8"))["stages"]

    def names(entries: list) -> list[str]:
        return [e if isinstance(e, str) else next(iter(e)) for e in entries or []]

    return {
        name: {k: names(body.get(k)) for k in ("params", "deps", "outs")}
        for name, spec in stages.items()
        for body in [spec.get("do", spec)]
    }


def _within(dep: str, out: str) -> bool:
    return dep == out or dep.startswith(out + "/") or out.startswith(dep + "/")


SWEPT = ("prepare", "train_teacher", "synthesize", "build_transfer", "train_student_scratch", "distill")


def stage_keys(raw: dict, synth_device: str | None = None) -> dict[str, str]:
    """The output key of each stage the sweep runs (teachers one by one as `teacher@<name>`, all of them
    as `teachers`): a hash of the values of the params dvc.yaml declares for the stage and of the keys
    of the stages whose outputs its deps name, so two runs share an output exactly when DVC would.

    One refinement on dvc.yaml: synthesis reads `student.model` only to build the proxy student of the
    disagreement terms, so with synth.disagreement_weight 0 the pool is shared across students. The
    synthesis device, where it differs from the others', is part of synthesize's key."""
    spec = pipeline_spec()
    teachers = list(raw["teachers"])
    keys: dict[str, str] = {}
    producers: list[tuple[str, str]] = []  # (an out path, the key of what wrote it)
    for stage in SWEPT:
        instances = [(f"teacher@{t}", t) for t in teachers] if stage == "train_teacher" else [(stage, None)]
        for name, item in instances:

            def resolved(text: str, item: str | None = item) -> str:
                return text.replace("${key}", item) if item is not None else text

            declared = [resolved(p) for p in spec[stage]["params"]]
            weight = lookup(raw, "synth.disagreement_weight")
            if stage == "synthesize" and not (isinstance(weight, int | float) and weight > 0):
                declared = [p for p in declared if p != "student.model"]
            values = {p: lookup(raw, p) for p in declared}
            if stage == "synthesize" and synth_device:
                values["synth_device"] = synth_device
            upstream = sorted(
                {key for dep in spec[stage]["deps"] for out, key in producers if _within(resolved(dep), out)}
            )
            keys[name] = key_of({"params": values, "upstream": upstream})
            producers += [(resolved(out), keys[name]) for out in spec[stage]["outs"]]
        if stage == "train_teacher":
            keys["teachers"] = key_of([keys[f"teacher@{t}"] for t in teachers])
    return keys


class Sweep:
    """Runs (variant, seed) pairs in `work`; `run` returns one row of metrics and times."""

    def __init__(
        self,
        base: dict,
        work: Path,
        log: Callable[[str], None] = print,
        device: str = "cpu",
        synth_device: str | None = None,
    ) -> None:
        self.base = base
        self.work = Path(work)
        self.log = log
        self.device = device  # part of every stage key: runs on another device never share outputs
        self.synth_device = synth_device if synth_device not in (None, device) else None

    def params_for(self, overrides: dict[str, Any], seed: int, run_dir: Path) -> tuple[Params, dict[str, Path]]:
        raw = copy.deepcopy(self.base)
        for dotted, value in overrides.items():
            set_dotted(raw, dotted, value)
        raw["seed"] = seed
        raw["device"] = self.device
        # keys from the validated params, so a default written out and one left out are the same
        keys = stage_keys(
            parse_params(raw, source=f"variant {run_dir.parent.name}").model_dump(mode="json"), self.synth_device
        )
        dirs = {
            "prepare": self.work / "prepared" / keys["prepare"],
            "teachers": self.work / "teacher_sets" / keys["teachers"],
            "synthesize": self.work / "synthetic" / keys["synthesize"],
            "build_transfer": self.work / "transfer" / keys["build_transfer"],
            "train_student_scratch": self.work / "scratch" / keys["train_student_scratch"],
            "distill": self.work / "distilled" / keys["distill"],
        }
        for name in raw["teachers"]:
            dirs[f"teacher@{name}"] = self.work / "teachers" / keys[f"teacher@{name}"] / name
        raw["paths"] = {
            "prepared": str(dirs["prepare"]),
            "teachers": str(dirs["teachers"]),
            "synthetic": str(dirs["synthesize"]),
            "transfer": str(dirs["build_transfer"]),
            "student_scratch": str(dirs["train_student_scratch"]),
            "student_kd": str(dirs["distill"]),
            "metrics": str(run_dir / "metrics"),
            "plots": str(run_dir / "plots"),
            "reports": str(run_dir / "reports"),
            "live": str(run_dir / "live"),
            "work": str(self.work / "state"),
        }
        return parse_params(raw, source=f"variant {run_dir.parent.name}"), dirs

    def _timed(self, stage: str, out: Path, marker: str, action: Callable[[], None]) -> float:
        """Runs `action` unless `out` is complete already; returns the seconds it took (then or before)."""
        times = out.parent / f"{out.name}.seconds.json"
        if (out / marker).is_file() and times.is_file():
            return float(read_json(times)["seconds"])
        started = time.perf_counter()
        action()
        seconds = round(time.perf_counter() - started, 2)
        write_json(times, {"stage": stage, "seconds": seconds})
        self.log(f"  {stage}: {seconds:.1f} s")
        return seconds

    def run(self, name: str, overrides: dict[str, Any], seed: int) -> dict[str, Any]:
        run_dir = self.work / "runs" / name / f"seed{seed}"
        params, dirs = self.params_for(overrides, seed, run_dir)
        self.log(f"{name}, seed {seed}")
        seconds: dict[str, float] = {}
        seconds["prepare"] = self._timed("prepare", dirs["prepare"], "meta.json", lambda: get_stage("prepare")(params))
        link_dir = dirs["teachers"]
        link_dir.mkdir(parents=True, exist_ok=True)
        for teacher in params.teachers:
            # each teacher is trained once under its own key; the variant sees it through a link
            home = dirs[f"teacher@{teacher}"]
            single = params.model_copy(update={"paths": params.paths.model_copy(update={"teachers": home.parent})})
            seconds[f"teacher {teacher}"] = self._timed(
                f"train_teacher@{teacher}",
                home,
                "model.json",
                lambda single=single, teacher=teacher: get_stage("train_teacher")(single, teacher=teacher),
            )
            target = link_dir / teacher
            if not target.is_symlink():
                target.symlink_to(home.resolve(), target_is_directory=True)
        finished = {"synthesize": "summary.json", "build_transfer": "summary.json"}
        finished.update(train_student_scratch="model.json", distill="model.json")
        for stage, marker in finished.items():
            staged = params
            if stage == "synthesize" and self.synth_device:
                staged = params.model_copy(update={"device": self.synth_device})
            seconds[stage] = self._timed(stage, dirs[stage], marker, lambda s=stage, p=staged: get_stage(s)(p))
        get_stage("evaluate")(params)
        summary = read_json(run_dir / "metrics" / "summary.json")
        generations = read_json(dirs["distill"] / "model.json")["config"].get("generations", [])
        synthesis = read_json(dirs["synthesize"] / "summary.json")
        synth_seconds = read_json(dirs["synthesize"].parent / f"{dirs['synthesize'].name}.seconds.json")["seconds"]
        row = {
            "method": name,
            "seed": seed,
            "student": params.student.model.name,
            **summary_columns(summary, list(params.teachers)),
            "generation_accuracies": " ".join(f"{g['eval_accuracy']:.4f}" for g in generations),
            "distill_s": seconds["distill"],
            "scratch_s": seconds["train_student_scratch"],
            "teachers_s": round(sum(v for k, v in seconds.items() if k.startswith("teacher ")), 2),
            "transfer_source": params.transfer.source,
            "transfer_real_samples": summary["transfer_set"]["real_samples"],
            "transfer_synthetic_samples": summary["transfer_set"]["synthetic_samples"],
            "synth_method": synthesis["method"] or "",
            "synth_images": synthesis["images"],
            "synth_steps": params.synth.steps if synthesis["method"] else 0,
            "synthesize_s": synth_seconds if synthesis["method"] else 0.0,
            "build_transfer_s": seconds["build_transfer"],
            "prepare_s": seconds["prepare"],
        }
        return row


def plan(variants: list[dict[str, Any]], seeds: list[int]) -> Iterator[tuple[str, dict[str, Any], int]]:
    """(name, overrides, seed) in the order the runs should go: seed-major, so every method has
    a first result early."""
    for seed in seeds:
        for variant in variants:
            yield variant["name"], dict(variant.get("set") or {}), seed


def main(argv: list[str] | None = None) -> int:
    """One (variant, seed) run in its own process: `python -m kdcore.experiments.sweep --name N --seed S ...`."""
    import argparse
    import sys

    from kdcore.errors import KdflowError

    parser = argparse.ArgumentParser(prog="python -m kdcore.experiments.sweep", description=main.__doc__)
    parser.add_argument("--params", type=Path, default=Path("params.yaml"))
    parser.add_argument("--work", type=Path, required=True)
    parser.add_argument("--name", required=True)
    parser.add_argument("--set", dest="overrides", default="{}", help="dotted overrides as a JSON object")
    parser.add_argument("--seed", type=int, required=True)
    parser.add_argument("--row", type=Path, required=True, help="where to write the result row (JSON)")
    parser.add_argument("--device", default="cpu", help="params `device` of every stage (default cpu)")
    parser.add_argument("--synth-device", help="params `device` of the synthesize stage alone (default: --device)")
    args = parser.parse_args(argv)
    try:
        base = read_yaml(args.params.read_text(), source=str(args.params))
        sweep = Sweep(base, args.work, log=lambda line: print(line, flush=True), device=args.device,
                      synth_device=args.synth_device)  # fmt: skip
        row = sweep.run(args.name, json.loads(args.overrides), args.seed)
    except KdflowError as err:
        print(f"kdflow sweep: error: {args.name} seed {args.seed}: {err}", file=sys.stderr)
        return err.exit_code
    write_json(args.row, row)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
