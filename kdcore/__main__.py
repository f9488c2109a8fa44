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
    args = parser.parse_args(argv)
    from kdcore.config import load_params
    from kdcore.stages import get_stage

    try:
        params = load_params(args.params)
        get_stage(args.stage)(params)
    except KdflowError as err:
        print(f"kdflow {args.stage}: error: {err}", file=sys.stderr)
        return err.exit_code
    return 0


if __name__ == "__main__":
    sys.exit(main())
