"""Where flows send their runs: the project's local server when it answers, else a temporary one.

prefect.toml names the host and port of the server `make server` starts. When it answers,
PREFECT_API_URL is set to it before Prefect loads its settings; when it does not, the URL stays
unset and Prefect starts its own temporary server for the run (slower to start, same results).
"""

from __future__ import annotations

import os
import tomllib
import urllib.request
from pathlib import Path

PROJECT_ROOT = Path(__file__).resolve().parents[1]


def toml_api_url() -> str | None:
    """The API URL of the server prefect.toml configures (the current directory's, else the project's)."""
    toml = Path.cwd() / "prefect.toml"
    if not toml.is_file():
        toml = PROJECT_ROOT / "prefect.toml"
    if not toml.is_file():
        return None
    api = tomllib.loads(toml.read_text()).get("server", {}).get("api", {})
    if "port" not in api:
        return None
    return f"http://{api.get('host', '127.0.0.1')}:{api['port']}/api"


def server_answers(api_url: str, timeout_s: float = 1.0) -> bool:
    try:
        with urllib.request.urlopen(f"{api_url.rstrip('/')}/health", timeout=timeout_s) as response:
            return response.status == 200
    except OSError:
        return False


# Prefect waits 20 s (counted in 0.1 s sleeps) for its temporary server; a 2-core machine busy with
# training needs longer: 2 of 3 starts timed out at 20 s with another job running
EPHEMERAL_STARTUP_TIMEOUT_S = "300"


def use_local_server_if_running() -> str | None:
    """Returns the API URL flows will use; None means Prefect's temporary server.

    A PREFECT_API_URL set in the environment (Prefect Cloud, a shared server) is always kept. The
    temporary server gets EPHEMERAL_STARTUP_TIMEOUT_S to come up unless the environment sets its own.
    """
    os.environ.setdefault("PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS", EPHEMERAL_STARTUP_TIMEOUT_S)
    if os.environ.get("PREFECT_API_URL"):
        return os.environ["PREFECT_API_URL"]
    os.environ.pop("PREFECT_API_URL", None)  # an empty value is not "unset" to Prefect's event client
    url = toml_api_url()
    if url and server_answers(url):
        os.environ["PREFECT_API_URL"] = url
        return url
    return None
