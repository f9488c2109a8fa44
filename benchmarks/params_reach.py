"""How far the whole params object travels below a stage: the functions a stage's run calls that take
`Params` (climbs back up to the stage floor) or re-read the prepared data's meta.json.

    python benchmarks/params_reach.py [--stage distill]

Runs the tiny pipeline (the tests' params, scikit-learn's digits) up to the stage in a temporary
directory, then the stage under a profiler, and counts every call of a kdcore function, below the
stage's own `run`, with a `Params` among its arguments, and every call of `load_meta`, with the
functions that made them. Run it at two commits to compare them (it imports only names both have).
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from collections import Counter
from pathlib import Path

ROOT = Path.cwd()
sys.path.insert(0, str(ROOT))

from kdcore.config import Params, parse_params  # noqa: E402
from kdcore.stages import STAGE_NAMES, get_stage  # noqa: E402
from tests.conftest import tiny_raw  # noqa: E402


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--stage", default="distill")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        params = parse_params(tiny_raw(Path(tmp)))
        for name in STAGE_NAMES[: STAGE_NAMES.index(args.stage)]:
            if name not in ("train_student_scratch", "export", "quantize", "evaluate", "update"):
                get_stage(name)(params)
        stage_run = __import__(f"kdcore.stages.{args.stage}", fromlist=["run"]).run
        climbs: Counter[str] = Counter()
        meta_reads: Counter[str] = Counter()

        def where(code) -> str:
            return f"{Path(code.co_filename).relative_to(ROOT)}:{code.co_name}"

        def profile(frame, event, _arg) -> None:
            if event != "call" or not frame.f_code.co_filename.startswith(str(ROOT / "kdcore")):
                return
            if frame.f_code is stage_run.__code__:
                return
            if any(isinstance(v, Params) for v in frame.f_locals.values()):
                climbs[where(frame.f_code)] += 1
            if frame.f_code.co_name == "load_meta" and frame.f_back is not None:
                meta_reads[where(frame.f_back.f_code)] += 1

        sys.setprofile(profile)
        try:
            stage_run(params)
        finally:
            sys.setprofile(None)
    print(f"{args.stage}: calls below run() that take the whole Params: {sum(climbs.values())} "
          f"({len(climbs)} functions)")  # fmt: skip
    for name, n in climbs.most_common():
        print(f"  {n:3d}  {name}")
    print(f"{args.stage}: load_meta (meta.json) calls: {sum(meta_reads.values())}, from {len(meta_reads)} functions")
    for name, n in meta_reads.most_common():
        print(f"  {n:3d}  {name}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
