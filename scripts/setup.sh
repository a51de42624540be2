#!/usr/bin/env bash
# Checks what building and testing Engram needs, and installs what is missing.
#
#   scripts/setup.sh           toolchain and system packages for build + tests
#   scripts/setup.sh --bench   ... plus the Python peers (benches/peers/requirements.txt)
#
# Idempotent and quiet when everything is present. Installs Debian packages with apt-get
# (as root, or through sudo) and Python packages with pip.
set -euo pipefail
cd "$(dirname "$0")/.."

# Debian packages the build and tests need: a C/C++ toolchain and libclang (bindgen) for
# RocksDB, ccache so that a rebuild of RocksDB's C++ takes minutes, not half an hour, and
# nftables for the chaos suite's network partitions (rules between loopback node addresses).
DEB_PACKAGES=(gcc g++ make libclang-dev ccache nftables)

say() { echo "setup: $*" >&2; }

if ! command -v cargo >/dev/null 2>&1; then
  say "cargo not found: install the Rust toolchain (rustup, stable >= 1.85) and re-run"
  exit 1
fi

missing=()
for p in "${DEB_PACKAGES[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if ((${#missing[@]})); then
  say "installing Debian packages: ${missing[*]}"
  SUDO=""
  [ "$(id -u)" -eq 0 ] || SUDO="sudo"
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq "${missing[@]}"
fi

if [ "${1:-}" = "--bench" ]; then
  if ! python3 -c "import hnswlib, faiss, numpy, usearch, qdrant_edge, pymilvus, milvus_lite, lancedb" >/dev/null 2>&1; then
    say "installing the Python peers (hnswlib, FAISS, usearch, Qdrant Edge, Milvus Lite, LanceDB; hnswlib builds from source: about a minute)"
    python3 -m pip install -q -r benches/peers/requirements.txt
  fi
fi
