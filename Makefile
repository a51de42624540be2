# The two commands of the README. Both install what a fresh machine lacks first.
#
#   make up      a local 3-zone cluster (3 real node processes on loopback) with demo memories
#   make test    the whole test suite (what CI runs)
#
# Benchmarks:
#   make bench          Engram's index vs hnswlib and FAISS (default: the 10k set;
#                       DATASET=../shared/datasets/glove-6b-50-angular for the 390k run)
#   make bench-cluster  end to end against a local 3-zone cluster (engram-bench cluster)
#   make results        every benchmark (all six peers on the 390k set, the agent workload
#                       at 50/384/768/1536 dimensions, scaling 1-3-6 nodes, failover), then
#                       benches/RESULTS.md with its plots; about two hours. QUICK=1: minutes.
#
# Chaos:
#   make chaos          engram-chaos run on a local 6-node, 3-zone cluster (CHAOS_ARGS: seeds,
#                       duration, fault groups; see chaos/README.md)

DATASET ?= ../shared/datasets/glove-6b-50-angular-10k

# RocksDB's C++ is compiled through ccache when it is installed (scripts/setup.sh installs it).
# Only PATH changes, never CC/CXX, so builds with and without ccache share one target dir.
export PATH := /usr/lib/ccache:$(PATH)

.PHONY: up bench bench-cluster results chaos test
UP_ARGS ?= --demo
up:
	scripts/setup.sh
	cargo run --release --locked -p engram-node --bin engram -- up $(UP_ARGS)

bench:
	benches/compare-index.sh $(DATASET)

CLUSTER_ARGS ?= --tenants 10 --users 100
bench-cluster:
	scripts/setup.sh
	cargo build --release --locked -p engram-node -p engram-bench
	cargo run --release --locked -p engram-bench -- cluster --dataset $(DATASET) $(CLUSTER_ARGS)

results:
	benches/run-all.sh

CHAOS_ARGS ?= --seed 1 --duration 120s --faults kill,pause,partition,zone --out chaos-results
chaos:
	scripts/setup.sh
	cargo build --release --locked -p engram-node -p engram-chaos
	cargo run --release --locked -p engram-chaos -- run $(CHAOS_ARGS)

test:
	scripts/setup.sh
	cargo test --workspace --locked
