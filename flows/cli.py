"""What the flows' command lines share: starting a flow run, and its final state as an exit status."""

from __future__ import annotations

import os
import sys
from collections.abc import Callable
from typing import Any

SERVER_HELP = (
    "start a Prefect server once with `make server` (flows use it when it answers), or give the "
    "temporary one longer with PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS"
)


# expected outcomes a flow ends in by name, each with its own exit status (scripts and schedulers branch on them)
OUTCOMES = {"Rejected": 4, "RolledBack": 5, "Busy": 6}


def exit_status(state, prog: str) -> int:
    """0 for a completed flow run; an expected outcome's own status (OUTCOMES); else 1. Every status
    but 0 comes with the state's name and message on stderr in one line."""
    if state.is_completed() and state.name not in OUTCOMES:
        return 0
    message = " ".join(str(state.message).split())
    print(f"{prog}: {state.name}: {message}", file=sys.stderr)
    return OUTCOMES.get(state.name, 1)


def run_flow(prog: str, flow: Callable[..., Any], **kwargs: Any) -> int:
    """Runs `flow` once and returns the exit status. A Prefect API that cannot be reached (no server
    and the temporary one did not come up) ends in one line that says what to do, exit status 3."""
    try:
        state = flow(return_state=True, **kwargs)
    except Exception as err:  # noqa: BLE001 - only failures to reach the API reach here; a run's own errors are in its state
        text = str(err)
        api = os.environ.get("PREFECT_API_URL")
        if "ephemeral Prefect API server" in text:
            waited = os.environ.get("PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS", "?")
            print(
                f"{prog}: error: the temporary Prefect server did not start within {waited} s; {SERVER_HELP}",
                file=sys.stderr,
            )
            return 3
        if api and ("connect" in text.lower() or type(err).__name__ in ("ConnectError", "ConnectTimeout")):
            print(
                f"{prog}: error: the Prefect API at {api} does not answer ({type(err).__name__}); "
                "start it (`make server`) or unset PREFECT_API_URL to use a temporary one",
                file=sys.stderr,
            )
            return 3
        raise
    return exit_status(state, prog)
