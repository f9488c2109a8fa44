"""`python -m kdcore <stage> [--params params.yaml]`: run one pipeline stage."""

from __future__ import annotations

import argparse
import sys
import tempfile
import traceback
from pathlib import Path

from kdcore.errors import KdflowError
from kdcore.stages import STAGE_NAMES


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m kdcore", description="Run one kdflow pipeline stage.")
    parser.add_argument("stage", choices=STAGE_NAMES)
    parser.add_argument("--params", default="params.yaml", help="parameters file (default: params.yaml)")
    parser.add_argument("--teacher", help="train_teacher: only this teacher (default: every teacher, in order)")
    args = parser.parse_args(argv)
    from kdcore import distributed
    from kdcore.config import load_params
    from kdcore.errors import ConfigError
    from kdcore.runtime import resolve_device
    from kdcore.stages import get_stage

    work = Path(".kdflow")
    try:
        params = load_params(args.params)
        work = params.paths.work
        if args.teacher is not None and args.stage != "train_teacher":
            raise ConfigError(f"--teacher applies to train_teacher only, not {args.stage}")
        options = {"teacher": args.teacher} if args.stage == "train_teacher" else {}
        many = args.stage in distributed.STAGES and params.distributed.processes > 1
        if many and not distributed.launched():
            distributed.check_devices(params.distributed, resolve_device(params.device))
            return distributed.relaunch(params.distributed, sys.argv[1:] if argv is None else argv)
        if many:
            device = distributed.local_device(resolve_device(params.device))
            params = params.model_copy(update={"device": str(device)})
            distributed.init(device)
        get_stage(args.stage)(params, **options)
    except KdflowError as err:
        where = f" (rank {distributed.rank()})" if distributed.rank() else ""
        print(f"kdflow {args.stage}{where}: error: {err}", file=sys.stderr)
        return err.exit_code
    except Exception as err:  # noqa: BLE001 - not a case kdflow knows: one line here, the traceback in a file
        saved = save_traceback(work, args.stage)
        first = " ".join(str(err).split())[:300]
        print(
            f"kdflow {args.stage}: error: unexpected {type(err).__name__}: {first} (traceback in {saved})",
            file=sys.stderr,
        )
        return 1
    finally:
        distributed.shutdown()
    return 0


def save_traceback(work: Path, stage: str) -> Path:
    """Writes the current exception's traceback under `work` and returns the file's path."""
    path = Path(work) / "logs" / f"{stage}.traceback.txt"
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(traceback.format_exc())
    except OSError:
        path = Path(tempfile.gettempdir()) / f"kdflow-{stage}.traceback.txt"
        path.write_text(traceback.format_exc())
    return path


if __name__ == "__main__":
    sys.exit(main())
