#!/usr/bin/env bash
# Prefect's overhead over plain `dvc repro` on the same workspace: a full run (every output removed
# first, teacher-output cache too) and a no-op run, each way. Start the local server first
# (`make server`) to measure what scheduled runs see. The flow commits its results (two commits).
set -euo pipefail
cd "$(dirname "$0")/.."
export PATH="$PWD/.venv/bin:$PATH" DVC_NO_ANALYTICS=1 GX_ANALYTICS_ENABLED=false TQDM_DISABLE=1
outs="data/prepared data/transfer models/teacher models/student_kd models/student_scratch .kdflow/cache .kdflow/checkpoints"

seconds() { local t0 t1; t0=$(date +%s.%N); "$@" >/tmp/kdflow_bench.log 2>&1 || { cat /tmp/kdflow_bench.log; exit 1; }; t1=$(date +%s.%N); echo "$t1 - $t0" | bc; }

rm -rf $outs; dvc_full=$(seconds dvc repro)
dvc_noop=$(seconds dvc repro)
rm -rf $outs; flow_full=$(seconds python -m flows.pipeline)
flow_noop=$(seconds python -m flows.pipeline)

printf 'server: %s\n' "$(python -c 'from flows.settings import use_local_server_if_running as u; print(u() or "temporary")')"
printf '%-10s %10s %10s %10s %8s\n' run "dvc (s)" "flow (s)" "extra (s)" ratio
printf '%-10s %10.1f %10.1f %10.1f %8.2f\n' full "$dvc_full" "$flow_full" "$(echo "$flow_full - $dvc_full" | bc)" "$(echo "$flow_full / $dvc_full" | bc -l)"
printf '%-10s %10.1f %10.1f %10.1f %8.2f\n' no-op "$dvc_noop" "$flow_noop" "$(echo "$flow_noop - $dvc_noop" | bc)" "$(echo "$flow_noop / $dvc_noop" | bc -l)"
