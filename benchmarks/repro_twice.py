"""Same inputs, same bytes: `dvc repro -f` twice in a fresh clone, every output file hashed after each;
then the outputs travel: `dvc push` to a fresh remote and `dvc pull` into a second clone, timed.

    python benchmarks/repro_twice.py [--rev HEAD]
    python benchmarks/repro_twice.py --rev HEAD --against REV   # HEAD's outputs against another commit's

Clones the project at `--rev` into a temporary directory, runs `dvc repro -f` twice, hashes every file
under every output dvc.yaml declares (DVC-cached and git-kept alike), and prints the files whose bytes
differ between the runs, then `dvc status` after the second run. The files that hold measured
wall-clock times (metrics/timings/, reports/latency.md) are expected to differ and are listed as such;
any other difference is a defect, and so is a clone that pulls other bytes.

With `--against REV`, each of the two commits is cloned and reproduced once (`dvc repro -f`), and
every output file of either is compared: the check that a change of structure left what the
pipeline computes as it was. Files only one commit writes are listed apart.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def sh(cwd: Path, *cmd: str) -> str:
    env = {**os.environ, "TQDM_DISABLE": "1", "DVC_NO_ANALYTICS": "1", "GX_ANALYTICS_ENABLED": "false",
           "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}",
           "GIT_AUTHOR_NAME": "b", "GIT_AUTHOR_EMAIL": "b@localhost", "GIT_COMMITTER_NAME": "b",
           "GIT_COMMITTER_EMAIL": "b@localhost"}  # fmt: skip
    result = subprocess.run(cmd, cwd=cwd, env=env, capture_output=True, text=True)
    if result.returncode != 0:
        raise SystemExit(f"{' '.join(cmd)} failed: {result.stderr.strip().splitlines()[-1:]}")
    return result.stdout


def outputs(repo: Path) -> list[str]:
    """Every output path of every stage, as dvc.lock records them."""
    import yaml

    lock = yaml.safe_load((repo / "dvc.lock").read_text())
    return sorted({out["path"] for stage in lock["stages"].values() for out in stage.get("outs", [])})


def hash_tree(repo: Path, paths: list[str]) -> dict[str, str]:
    hashes = {}
    for rel in paths:
        target = repo / rel
        files = sorted(p for p in target.rglob("*") if p.is_file()) if target.is_dir() else [target]
        for f in files:
            if f.is_file():
                hashes[str(f.relative_to(repo))] = hashlib.sha256(f.read_bytes()).hexdigest()
    return hashes


def holds_timings(path: str) -> bool:
    """The outputs that hold wall-clock measurements, and nothing else: metrics/timings/ and the
    latency page (kdcore/evaluate/measured.py)."""
    return "/timings/" in f"/{path}" or path.endswith("latency.md")


def against(rev: str, other: str) -> int:
    """One `dvc repro -f` at each commit, in its own clone; every output file of either compared."""
    with tempfile.TemporaryDirectory() as tmp:
        hashes, seconds = {}, {}
        for name in (other, rev):
            repo = Path(tmp) / f"kdflow-{len(hashes)}"
            sh(Path(tmp), "git", "clone", "-q", str(ROOT), str(repo))
            sh(repo, "git", "checkout", "-q", name)
            started = time.perf_counter()
            sh(repo, "dvc", "repro", "-f")
            seconds[name] = time.perf_counter() - started
            hashes[name] = hash_tree(repo, outputs(repo))
        old, new = hashes[other], hashes[rev]
        both = sorted(old.keys() & new.keys())
        differ = [f for f in both if old[f] != new[f]]
        timed = [f for f in differ if holds_timings(f)]
        other_files = [f for f in differ if f not in timed]
        print(f"dvc repro -f at {other}: {seconds[other]:.0f} s; at {rev}: {seconds[rev]:.0f} s")
        print(f"output files in both: {len(both)}; identical: {len(both) - len(differ)}; differ: {len(differ)}")
        print(f"  differ, holding measured times: {json.dumps(timed)}")
        print(f"  differ, anything else: {json.dumps(other_files)}")
        print(f"  only at {other}: {json.dumps(sorted(old.keys() - new.keys()))}")
        print(f"  only at {rev}: {json.dumps(sorted(new.keys() - old.keys()))}")
        return 1 if other_files else 0


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rev", default="HEAD")
    parser.add_argument("--against", help="compare --rev's outputs with this commit's instead of running twice")
    args = parser.parse_args()
    if args.against:
        return against(args.rev, args.against)
    with tempfile.TemporaryDirectory() as tmp:
        repo = Path(tmp) / "kdflow"
        sh(Path(tmp), "git", "clone", "-q", str(ROOT), str(repo))
        sh(repo, "git", "checkout", "-q", args.rev)
        runs, seconds = [], []
        for _ in range(2):
            started = time.perf_counter()
            sh(repo, "dvc", "repro", "-f")
            seconds.append(time.perf_counter() - started)
            runs.append(hash_tree(repo, outputs(repo)))
        status = sh(repo, "dvc", "status").strip()
        differ = sorted(f for f in runs[0].keys() | runs[1].keys() if runs[0].get(f) != runs[1].get(f))
        timed = [f for f in differ if holds_timings(f)]
        other = [f for f in differ if f not in timed]
        print(f"dvc repro -f twice at {args.rev}: {seconds[0]:.0f} s and {seconds[1]:.0f} s")
        print(f"output files: {len(runs[1])}; identical: {len(runs[1]) - len(differ)}; differ: {len(differ)}")
        print(f"  differ, holding measured times: {json.dumps(timed)}")
        print(f"  differ, anything else: {json.dumps(other)}")
        print(f"dvc status after the second run: {status or '(empty)'}")

        # push from this clone to a fresh remote (the shipped `storage` remote, pointed elsewhere), pull into another
        sh(repo, "git", "add", "-A")
        sh(repo, "git", "commit", "-qm", "the second run's results")
        remote = Path(tmp) / "remote"
        sh(repo, "dvc", "remote", "modify", "--local", "storage", "url", str(remote))
        started = time.perf_counter()
        pushed = sh(repo, "dvc", "push").strip().splitlines()[-1]
        push_s = time.perf_counter() - started
        teammate = Path(tmp) / "teammate"
        sh(Path(tmp), "git", "clone", "-q", str(repo), str(teammate))
        sh(teammate, "dvc", "remote", "modify", "--local", "storage", "url", str(remote))
        started = time.perf_counter()
        pulled = sh(teammate, "dvc", "pull").strip().splitlines()[-1]
        pull_s = time.perf_counter() - started
        files = sum(1 for p in remote.rglob("*") if p.is_file())
        size = sum(p.stat().st_size for p in remote.rglob("*") if p.is_file())
        same = hash_tree(teammate, outputs(teammate)) == {
            k: v for k, v in runs[1].items() if k in hash_tree(teammate, outputs(teammate))
        }
        print(f"dvc push: {push_s:.1f} s ({pushed}); remote holds {files} files, {size / 1e6:.1f} MB")
        print(
            f"dvc pull into a second clone: {pull_s:.1f} s ({pulled}); dvc status there: "
            f"{sh(teammate, 'dvc', 'status').strip()}; outputs identical to the pushing clone: {same}"
        )
        return 1 if other or not same else 0


if __name__ == "__main__":
    sys.exit(main())
