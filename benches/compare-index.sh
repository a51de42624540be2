#!/usr/bin/env bash
# Engram's index vs hnswlib and FAISS on one dataset, back to back on this machine, as ratios
# (the quick comparison; `benches/run-all.sh` runs every peer and every benchmark).
#
#   benches/compare-index.sh [DATASET_DIR] [extra engram-bench compare args...]
#
# Default dataset: ../shared/datasets/glove-6b-50-angular (390k, the acceptance set).
# Writes engram.json, peers-*.json, compare.json and compare.md under
# bench-results/<dataset>-<time>/.
set -euo pipefail
cd "$(dirname "$0")/.."
dataset=${1:-../shared/datasets/glove-6b-50-angular}
shift || true
out=${OUT:-bench-results/$(basename "$dataset")-$(date +%Y%m%d-%H%M%S)}

scripts/setup.sh --bench
cargo build --release --locked -p engram-bench
cargo run --release --locked -q -p engram-bench -- compare --dataset "$dataset" \
  --engines hnswlib,faiss --out "$out" "$@"
echo "results in $out"
