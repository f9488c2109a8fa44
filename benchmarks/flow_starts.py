"""How often the pipeline flow starts with no Prefect server running while the machine is busy.

    python benchmarks/flow_starts.py [--runs 10] [--load 2] [--timeouts 20 default]

For each startup timeout (20: Prefect's own default; `default`: what flows/settings.py sets), runs
`python -m flows.pipeline --no-commit` `--runs` times in a row in a throwaway kdflow project (the real
flow and params, one stage, so the run is mostly the start of Prefect's temporary server), each with
a fresh Prefect home and no server answering, while `--load` processes keep the cores busy with
matrix products. Prints one line per run and a table; nothing is written to the project.
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from flows.settings import EPHEMERAL_STARTUP_TIMEOUT_S, server_answers, toml_api_url  # noqa: E402

LOAD = "import torch\ntorch.set_num_threads(1)\na = torch.randn(1024, 1024)\nwhile True:\n    a = (a @ a).tanh()\n"
ONE_STAGE = """stages:
  check_params:
    cmd: python -m kdcore check_params
    deps: [kdcore/config]
    params:
      - params.yaml:
    outs: [.kdflow/params_ok.json]
"""


def make_project(root: Path, env: dict[str, str]) -> Path:
    for package in ("kdcore", "flows", "tasks"):
        shutil.copytree(ROOT / package, root / package, ignore=shutil.ignore_patterns("__pycache__"))
    shutil.copy(ROOT / "params.yaml", root / "params.yaml")
    (root / "dvc.yaml").write_text(ONE_STAGE)
    (root / "metrics").mkdir()
    (root / "metrics" / "summary.json").write_text('{"student_kd": {"accuracy": 0.95}}')  # what the gate reads
    (root / ".gitignore").write_text(".prefect/\n")
    for cmd in (["git", "init", "-q"], ["dvc", "init", "-q"], ["dvc", "repro", "-q"], ["git", "add", "-A"],
                ["git", "commit", "-qm", "project"]):  # fmt: skip
        subprocess.run(cmd, cwd=root, env=env, check=True, capture_output=True)
    return root


def one_run(project: Path, env: dict[str, str]) -> tuple[bool, float, str]:
    home = Path(tempfile.mkdtemp(prefix="prefect-home-"))
    started = time.perf_counter()
    try:
        result = subprocess.run(
            [sys.executable, "-m", "flows.pipeline", "--no-commit"],
            cwd=project,
            env={**env, "PREFECT_HOME": str(home)},
            capture_output=True,
            text=True,
            timeout=900,
        )
    finally:
        shutil.rmtree(home, ignore_errors=True)
    seconds = time.perf_counter() - started
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    why = "" if result.returncode == 0 else (lines[-1] if lines else f"exit {result.returncode}")
    return result.returncode == 0, seconds, why


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=10)
    parser.add_argument("--load", type=int, default=2, help="busy processes beside the flow runs")
    parser.add_argument("--timeouts", nargs="+", default=["20", "default"])
    args = parser.parse_args()
    url = toml_api_url()
    if url and server_answers(url):
        print(f"a Prefect server answers at {url}: stop it first (the point is to start without one)")
        return 2
    env = {k: v for k, v in os.environ.items() if not k.startswith("PREFECT_")}
    env.update(TQDM_DISABLE="1", DVC_NO_ANALYTICS="1", GX_ANALYTICS_ENABLED="false", PYTHONUNBUFFERED="1",
               PATH=f"{Path(sys.executable).parent}{os.pathsep}{env.get('PATH', '')}",
               GIT_AUTHOR_NAME="b", GIT_AUTHOR_EMAIL="b@localhost", GIT_COMMITTER_NAME="b",
               GIT_COMMITTER_EMAIL="b@localhost")  # fmt: skip
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        project = make_project(Path(tmp) / "project", env)
        load = [subprocess.Popen([sys.executable, "-c", LOAD]) for _ in range(args.load)]
        try:
            time.sleep(3)
            for timeout in args.timeouts:
                run_env = dict(env)
                if timeout != "default":
                    run_env["PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS"] = timeout
                shown = f"{timeout} s" if timeout != "default" else f"{EPHEMERAL_STARTUP_TIMEOUT_S} s (kdflow)"
                results = []
                for i in range(args.runs):
                    ok, seconds, why = one_run(project, run_env)
                    results.append((ok, seconds))
                    status = "started" if ok else "FAILED"
                    print(f"timeout {shown}: run {i + 1}: {status} in {seconds:.1f} s {why[:160]}", flush=True)
                times = sorted(s for _, s in results)
                rows.append((shown, sum(ok for ok, _ in results), len(results), times[len(times) // 2], times[-1]))
        finally:
            for proc in load:
                proc.kill()
    print(
        f"\n{args.load} busy processes on {os.cpu_count()} cores, no Prefect server running, fresh Prefect home per run"
    )
    print("| startup timeout | runs that started | median s | slowest s |")
    print("|---|---:|---:|---:|")
    for shown, ok, n, median, slowest in rows:
        print(f"| {shown} | {ok} of {n} | {median:.1f} | {slowest:.1f} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
