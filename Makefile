# The two commands of the README. Both install what a fresh machine lacks first.
#
#   make bench   Engram's index vs hnswlib and FAISS on a real dataset (default: the 10k set;
#                DATASET=../shared/datasets/glove-6b-50-angular for the 390k acceptance run)
#   make test    the whole test suite (what CI runs)

DATASET ?= ../shared/datasets/glove-6b-50-angular-10k

# RocksDB's C++ is compiled through ccache when it is installed (scripts/setup.sh installs it).
# Only PATH changes, never CC/CXX, so builds with and without ccache share one target dir.
export PATH := /usr/lib/ccache:$(PATH)

.PHONY: bench test
bench:
	benches/compare-index.sh $(DATASET)

test:
	scripts/setup.sh
	cargo test --workspace --locked
