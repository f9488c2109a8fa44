"""`kdflow`: one command line for what a user does with the project.

    kdflow check [--params params.yaml]     validate params.yaml (every key), nothing written
    kdflow repro [STAGE ...]                the DVC pipeline (`dvc repro`): what changed reruns
    kdflow stage STAGE [--teacher NAME]     one stage's code, outside DVC (`python -m kdcore STAGE`)
    kdflow flow [--no-commit]               the Prefect pipeline flow: stages, gate, one commit, dvc push
    kdflow update                           the lifelong update flow on the next landed batch
    kdflow compare [--seeds ...]            the methods comparison flow (reports/methods.md)
    kdflow search [--trials N] [--workers N] [--apply]  the student architecture search (search_student)
    kdflow report [--metrics]               print the last report (reports/report.md) or the metrics table
    kdflow push | pull                      models and data to / from the DVC remote (.dvc/config)

Each subcommand runs the same code as its `python -m` form; imports are deferred so that `check` and
`report` answer at once.
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
from pathlib import Path

EXAMPLES = "\n".join(__doc__.splitlines()[2:12])


def _tool(cmd: list[str]) -> int:
    """Runs dvc (from this interpreter's environment) with analytics off; its exit status."""
    env = dict(os.environ)
    env["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{env.get('PATH', '')}"
    env.setdefault("DVC_NO_ANALYTICS", "1")
    env.setdefault("GX_ANALYTICS_ENABLED", "false")
    if shutil.which(cmd[0], path=env["PATH"]) is None:
        print(f"kdflow: error: {cmd[0]} not found; install the project (make setup)", file=sys.stderr)
        return 127
    return subprocess.run(cmd, env=env).returncode


def _check(args: argparse.Namespace) -> int:
    from kdcore.config import load_params
    from kdcore.errors import KdflowError
    from kdcore.stages.check_params import check

    try:
        params = load_params(args.params)
        check(params)
    except KdflowError as err:
        print(f"kdflow check: error: {err}", file=sys.stderr)
        return err.exit_code
    teachers = ", ".join(params.teachers)
    print(f"{args.params}: valid (data {params.data.source}, teachers {teachers}, student {params.student.model.name})")
    return 0


def _report(args: argparse.Namespace) -> int:
    from kdcore.config import load_params
    from kdcore.errors import KdflowError

    try:
        paths = load_params(args.params).paths
    except KdflowError as err:
        print(f"kdflow report: error: {err}", file=sys.stderr)
        return err.exit_code
    path = paths.metrics / "summary.json" if args.metrics else paths.reports / "report.md"
    if not path.is_file():
        print(f"kdflow report: error: {path}: no report yet; run `kdflow repro` first", file=sys.stderr)
        return 2
    if args.metrics:
        import pandas as pd

        from kdcore.evaluate.measured import read_rows

        rows = read_rows(paths.metrics, "summary")
        # one row per model or file; `transfer_set` (what the distilled student learned from) is not one
        table = pd.DataFrame({name: row for name, row in rows.items() if "accuracy" in row}).T
        columns = [c for c in ("accuracy", "agreement", "ece", "params", "size_bytes", "latency_ms_b1") if c in table]
        print(table[columns].to_string(float_format=lambda v: f"{v:.4g}", na_rep="-"))  # "-": not measured for it
    else:
        print(path.read_text(), end="")
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="kdflow",
        description="kdflow: reproducible knowledge distillation as a DVC pipeline run by Prefect flows.",
        epilog=EXAMPLES,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    check = sub.add_parser("check", help="validate params.yaml; nothing is written")
    check.add_argument("--params", default="params.yaml")
    repro = sub.add_parser("repro", help="run the DVC pipeline (dvc repro)")
    repro.add_argument("targets", nargs="*", help="stages (default: all)")
    repro.add_argument("-f", "--force", action="store_true", help="rerun even stages that are up to date")
    stage = sub.add_parser("stage", help="run one stage's code outside DVC (python -m kdcore)")
    stage.add_argument("rest", nargs=argparse.REMAINDER, help="STAGE [--params FILE] [--teacher NAME]")
    flow = sub.add_parser("flow", help="run the Prefect pipeline flow (python -m flows.pipeline)")
    flow.add_argument("rest", nargs=argparse.REMAINDER, help="[--repo PATH] [--no-commit]")
    update = sub.add_parser("update", help="run the lifelong update flow (python -m flows.update)")
    update.add_argument("rest", nargs=argparse.REMAINDER)
    compare = sub.add_parser("compare", help="run the methods comparison flow (python -m flows.compare)")
    compare.add_argument("rest", nargs=argparse.REMAINDER, help="[--seeds ...] [--methods ...]")
    search = sub.add_parser("search", help="run the student search flow (python -m flows.search)")
    search.add_argument("rest", nargs=argparse.REMAINDER, help="[--trials N] [--workers N] [--apply]")
    report = sub.add_parser("report", help="print the last report (reports/report.md)")
    report.add_argument("--metrics", action="store_true", help="the metrics table instead (metrics/summary.json)")
    report.add_argument("--params", default="params.yaml")
    sub.add_parser("push", help="send models and data to the DVC remote (dvc push)")
    pull = sub.add_parser("pull", help="fetch the models and data of the checked-out commit (dvc pull)")
    pull.add_argument("targets", nargs="*")
    return parser


PASSTHROUGH = ("stage", "flow", "update", "compare", "search")  # their options belong to the command they run


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv and argv[0] in PASSTHROUGH:
        # everything after the command word is the run command's own (argparse's REMAINDER takes nothing
        # when the first word is an option, as in `kdflow compare --seeds 0`)
        args = argparse.Namespace(command=argv[0], rest=argv[1:])
    else:
        args = build_parser().parse_args(argv)
    if args.command == "check":
        return _check(args)
    if args.command == "report":
        return _report(args)
    if args.command == "repro":
        return _tool(["dvc", "repro", *(["-f"] if args.force else []), *args.targets])
    if args.command in ("push", "pull"):
        return _tool(["dvc", args.command, *getattr(args, "targets", [])])
    if args.command == "stage":
        from kdcore.__main__ import main as stage_main

        return stage_main(args.rest)
    if args.command == "flow":
        from flows.pipeline import main as flow_main

        return flow_main(args.rest)
    if args.command == "update":
        from flows.update import main as update_main

        return update_main(args.rest)
    if args.command == "search":
        from flows.search import main as search_main

        return search_main(args.rest)
    from flows.compare import main as compare_main

    return compare_main(args.rest)


if __name__ == "__main__":
    sys.exit(main())
