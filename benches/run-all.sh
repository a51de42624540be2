#!/usr/bin/env bash
# Every benchmark behind benches/RESULTS.md, back to back on this machine, then the report.
#
#   benches/run-all.sh [RESULTS_DIR]        (default: benches/results; what `make results` runs)
#
# DATASET   the ANN set of the comparison (default ../shared/datasets/glove-6b-50-angular)
# QUICK=1   a smoke run: the 10k set, small workloads, 3 failover trials (minutes, not hours)
# ONLY=...  run only these steps (comma-separated: compare,cluster,scale,failover); the
#           report is always rewritten from whatever results the directory holds
#
# The full run takes about two hours on 2 cores (the peers' 390k builds dominate).
set -euo pipefail
cd "$(dirname "$0")/.."
out=${1:-benches/results}
dataset=${DATASET:-../shared/datasets/glove-6b-50-angular}
report=benches/RESULTS.md
if [ "${QUICK:-0}" = 1 ]; then
  dataset=${DATASET:-../shared/datasets/glove-6b-50-angular-10k}
  small=(--queries 300 --tenants 5 --users 20 --mixed-seconds 5)
  compare=(--latency-queries 500)
  trials=3
  report="$out/RESULTS.md"
else
  small=()
  compare=()
  trials=10
fi
# Memories per dimension (the larger vectors get fewer, to keep each run to minutes).
memories() {
  if [ "${QUICK:-0}" = 1 ]; then echo 5000; return; fi
  case $1 in 768) echo 30000 ;; 1536) echo 15000 ;; *) echo 50000 ;; esac
}
mkdir -p "$out"

scripts/setup.sh --bench
cargo build --release --locked -p engram-node -p engram-bench
bench() { cargo run --release --locked -q -p engram-bench -- "$@"; }
step() { [ -z "${ONLY:-}" ] || [[ ",$ONLY," == *",$1,"* ]]; }

if step compare; then
  echo "== compare: Engram's index and the peers on $dataset =="
  bench compare --dataset "$dataset" --out "$out/compare" "${compare[@]}"
fi

for dim in 384 768 1536 50; do
  step cluster || break
  echo "== cluster: the agent-memory workload, dimension $dim =="
  bench cluster --workload agent --dim "$dim" --dataset ../shared/datasets/glove-6b-50-angular \
    --memories "$(memories "$dim")" "${small[@]}" --json "$out/cluster-agent-$dim.json"
done

step scale && echo "== scale: 1, 3 and 6 nodes ==" &&
bench scale --memories "$(memories 384)" "${small[@]}" --json "$out/scale.json" --svg "$out/scaling.svg"

step failover && echo "== failover: shard leaders killed ==" &&
bench failover --trials "$trials" --json "$out/failover.json" --svg "$out/failover.svg"

bench report --results "$out" --out "$report" --command "make results"
echo "report: $report"
