#!/usr/bin/env bash
# Engram vs hnswlib vs FAISS on one dataset, back to back on this machine, as ratios.
#
#   benches/compare-index.sh [DATASET_DIR] [extra engram-bench index args...]
#
# Default dataset: ../shared/datasets/glove-6b-50-angular (390k, the acceptance set).
# Writes engram.json, peers.json and compare.json under bench-results/<dataset>-<time>/.
set -euo pipefail
cd "$(dirname "$0")/.."
dataset=${1:-../shared/datasets/glove-6b-50-angular}
shift || true
out=${OUT:-bench-results/$(basename "$dataset")-$(date +%Y%m%d-%H%M%S)}
mkdir -p "$out"

scripts/setup.sh --bench
cargo build --release -p engram-bench

echo "== engram-bench index ($dataset) =="
target/release/engram-bench index --dataset "$dataset" --m 16 --ef-construction 200 --k 10 \
  --json "$out/engram.json" "$@" | tee "$out/engram.txt"
echo "== peers: hnswlib, FAISS =="
python3 benches/peers/peers.py run --dataset "$dataset" --m 16 --ef-construction 200 --k 10 \
  --json "$out/peers.json" | tee "$out/peers.txt"
echo "== Engram / peer QPS at equal recall@10 =="
python3 benches/peers/peers.py compare --engram "$out/engram.json" --peers "$out/peers.json" \
  --json "$out/compare.json" | tee "$out/compare.txt"
echo "results in $out"
