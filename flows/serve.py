"""Serve the pipeline flow on the nightly schedule without a work pool: `python -m flows.serve`.

The same schedule, parameters and tags as the `nightly` deployment in prefect.yaml; this process
runs the flow itself, so it must stay up (use `make deploy` and `make worker` otherwise).
"""

from __future__ import annotations

from pathlib import Path

import yaml

from flows.settings import PROJECT_ROOT, use_local_server_if_running


def nightly_deployment(prefect_yaml: Path = PROJECT_ROOT / "prefect.yaml") -> dict:
    """The `nightly` entry of prefect.yaml: one source of truth for schedule, parameters and tags."""
    deployments = yaml.safe_load(prefect_yaml.read_text())["deployments"]
    return next(d for d in deployments if d["name"] == "nightly")


def main() -> None:
    use_local_server_if_running()
    from flows.pipeline import kd_pipeline

    spec = nightly_deployment()
    schedule = spec["schedules"][0]
    kd_pipeline.serve(
        name=f"{spec['name']}-served",
        cron=schedule["cron"],
        parameters=spec["parameters"],
        tags=spec["tags"],
        description=spec.get("description"),
    )


if __name__ == "__main__":
    main()
