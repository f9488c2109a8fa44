"""`python -m kdcore <stage> [--params params.yaml]`: run one pipeline stage."""

from __future__ import annotations

import argparse
import sys

from kdcore.errors import KdflowError
from kdcore.stages import STAGE_NAMES


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m kdcore", description="Run one kdflow pipeline stage.")
    parser.add_argument("stage", choices=STAGE_NAMES)
    parser.add_argument("--params", default="params.yaml", help="parameters file (default: params.yaml)")
    parser.add_argument("--teacher", help="train_teacher: only this teacher (default: every teacher, in order)")
    args = parser.parse_args(argv)
    from kdcore.config import load_params
    from kdcore.errors import ConfigError
    from kdcore.stages import get_stage

    try:
        params = load_params(args.params)
        if args.teacher is not None and args.stage != "train_teacher":
            raise ConfigError(f"--teacher applies to train_teacher only, not {args.stage}")
        options = {"teacher": args.teacher} if args.stage == "train_teacher" else {}
        get_stage(args.stage)(params, **options)
    except KdflowError as err:
        print(f"kdflow {args.stage}: error: {err}", file=sys.stderr)
        return err.exit_code
    return 0


if __name__ == "__main__":
    sys.exit(main())
