"""What the flows' command lines share: a flow run's final state as an exit status."""

from __future__ import annotations

import sys


def exit_status(state, prog: str) -> int:
    """0 for a completed flow run; else 1, with the state's name and message on stderr in one line."""
    if state.is_completed():
        return 0
    print(f"{prog}: {state.name}: {state.message}", file=sys.stderr)
    return 1
