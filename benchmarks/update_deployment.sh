#!/usr/bin/env bash
# Three runs of the lifelong-update deployment on the local Prefect server, in a clone of this project
# (nothing here changes): a corrupt batch rejected, a good one promoted, one rolled back at a strict
# gate. Start the server first (`make server`); the pipeline's outputs come from this project's DVC
# cache (run `dvc repro` here first). Prints each run's state, the commits and tags, and the times.
set -euo pipefail
cd "$(dirname "$0")/.."
export PATH="$PWD/.venv/bin:$PATH" DVC_NO_ANALYTICS=1 GX_ANALYTICS_ENABLED=false TQDM_DISABLE=1
export PREFECT_API_URL="${PREFECT_API_URL:-http://127.0.0.1:4200/api}"
curl -sf "$PREFECT_API_URL/health" >/dev/null || { echo "no Prefect server at $PREFECT_API_URL: run make server" >&2; exit 1; }
cache="$PWD/.dvc/cache"
work=$(mktemp -d)/kdflow
git clone -q . "$work"
cd "$work"
dvc cache dir --local "$cache" && dvc checkout -q
dvc status -q || { echo "the clone's outputs are not in this project's cache: run dvc repro first" >&2; exit 1; }
prefect work-pool inspect kdflow-process >/dev/null 2>&1 || prefect work-pool create kdflow-process --type process >/dev/null
prefect --no-prompt deploy --name lifelong-update >/dev/null
python -m kdcore.lifelong.demo --batches 2 --corrupt

one_run() {
  local t0 t1 id
  t0=$(date +%s.%N)
  id=$(prefect deployment run kdflow-lifelong-update/lifelong-update 2>&1 | sed -n 's/.*UUID: *\([0-9a-f-]*\).*/\1/p')
  prefect worker start --pool kdflow-process --run-once >/tmp/kdflow_update_worker.log 2>&1
  t1=$(date +%s.%N)
  printf '%s: %.1f s, ' "$1" "$(echo "$t1 - $t0" | bc)"
  RUN_ID="$id" python - <<'EOF'
import asyncio, json, os, pathlib
from uuid import UUID
from prefect.client.orchestration import get_client

async def state():
    async with get_client() as client:
        return (await client.read_flow_run(UUID(os.environ["RUN_ID"]))).state
s = asyncio.run(state())
print(f"{s.name}: {s.message or ''}"[:300])
ledger_file = pathlib.Path(".kdflow/landing.json")
ledger = json.loads(ledger_file.read_text()) if ledger_file.is_file() else {}
for name, entry in ledger.items():
    print(f"  {name}: {entry['status']}: {entry['reason'][:200]}")
EOF
}

one_run "run 1 (corrupt.npz)"
one_run "run 2 (rot015.npz)"
python - <<'EOF'
import json
m = json.load(open("metrics/lifelong.json"))
print(f"  after run 2: increments {m['increments']}, ACC {m['acc']:.4f}, update {m['seconds_per_update']} s")
EOF
sed -i 's/^    min_newest: .*/    min_newest: 0.99    # a gate no update passes (benchmarks\/update_deployment.sh)/' params.yaml
git commit -qam "a strict lifelong gate"
one_run "run 3 (rot030.npz, strict gate)"
echo "commits:"; git log --oneline -4
echo "tags:"; git tag --list
echo "workspace: $(git status --porcelain | wc -l) changed paths; increments in params: $(grep '  increments:' params.yaml)"
