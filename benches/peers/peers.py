#!/usr/bin/env python3
"""Peer ANN baselines (hnswlib, FAISS IndexHNSWFlat) for side-by-side comparison with Engram.

Install:  pip install -r benches/peers/requirements.txt

Two subcommands (``run`` is the default when the first argument is an option):

  peers.py [run] --dataset DIR [--engines hnswlib,faiss] [--m 16] [--ef-construction 200]
                 [--k 10] [--ef 10,16,...,256] [--threads-build N] [--queries N]
                 [--repeats 3] [--json OUT]
      Builds each engine on DIR/base.fvecs (TEXMEX), queries DIR/query.fvecs and scores
      recall@k against DIR/groundtruth.ivecs, once per ef. Metric is angular: base and
      queries are L2-normalised (float32) and searched by inner product.
      JSON rows: {engine, ef, recall_at_k, qps, build_seconds, m, ef_construction, k,
      dataset, rss_growth_mb}.

  peers.py compare --engram ENGRAM.json --peers PEERS.json [--recall 0.90,0.95,0.99]
                   [--json OUT]
      ENGRAM.json: a list of {ef, recall_at_k, qps, [engine | tier]}; rows are grouped into
      curves by "engine"/"tier" when present, else one curve named "engram". PEERS.json is
      the output of ``run --json``. For each curve and target recall the QPS is linearly
      interpolated between the two points bracketing the target on the curve's
      recall/QPS Pareto frontier (identical to the raw points when QPS falls as recall
      rises); a target above the best recall reached is "not reached". Prints target,
      engram QPS, each peer's QPS and the ratio engram/peer.

How the peers are measured:
  * Build: wall seconds of add_items / add, using --threads-build threads (default: all cores).
  * Search: ONE thread (hnswlib num_threads=1, faiss.omp_set_num_threads(1)), all queries
    passed in a single batch call, QPS = nqueries / wall seconds of that call (best of
    --repeats). This is the most favourable way to measure the peers: there is no
    per-query Python call overhead at all, so an Engram/peer QPS ratio >= 1 is conservative.
  * Recall@k: |returned top-k ∩ ground-truth top-k| / k (id sets), averaged over queries.
  * rss_growth_mb: growth of the process's max RSS (ru_maxrss) across the build. It is a
    high-water mark, so for an engine built after another one it is only a lower bound;
    run that engine alone (--engines faiss) for an exact figure.
"""
from __future__ import annotations

import argparse
import gc
import json
import os
import resource
import sys
import time
from pathlib import Path
from typing import Any, Callable

import numpy as np

DEFAULT_EFS = "10,16,20,32,40,64,80,128,200,256"
Searcher = Callable[[np.ndarray, int, int], np.ndarray]  # (queries, k, ef) -> ids


def read_vecs(path: Path, dtype: str) -> np.ndarray:
    """Read a TEXMEX .fvecs/.ivecs file: per row an int32 dim, then dim 4-byte values."""
    raw = np.fromfile(path, dtype="<i4")
    if raw.size == 0:
        raise ValueError(f"{path}: empty file")
    dim = int(raw[0])
    if raw.size % (dim + 1):
        raise ValueError(f"{path}: size is not a multiple of the row size (dim={dim})")
    rows = raw.reshape(-1, dim + 1)
    if not np.all(rows[:, 0] == dim):
        raise ValueError(f"{path}: rows have differing dimensions")
    return np.ascontiguousarray(rows[:, 1:]).view(dtype)


def normalise(x: np.ndarray) -> np.ndarray:
    x = x.astype(np.float32, copy=True)
    norms = np.linalg.norm(x, axis=1, keepdims=True)
    norms[norms == 0] = 1.0
    return np.ascontiguousarray(x / norms, dtype=np.float32)


def recall_at_k(found: np.ndarray, truth: np.ndarray, k: int) -> float:
    hits = sum(len(set(f[:k].tolist()) & set(t[:k].tolist())) for f, t in zip(found, truth))
    return hits / (k * len(found))


def max_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0  # KiB on Linux


def build_hnswlib(base: np.ndarray, m: int, ef_construction: int, threads: int) -> Searcher:
    import hnswlib

    index = hnswlib.Index(space="ip", dim=base.shape[1])
    index.init_index(max_elements=len(base), M=m, ef_construction=ef_construction)
    index.set_num_threads(threads)
    index.add_items(base, np.arange(len(base)), num_threads=threads)
    index.set_num_threads(1)

    def search(queries: np.ndarray, k: int, ef: int) -> np.ndarray:
        index.set_ef(ef)
        labels, _ = index.knn_query(queries, k=k, num_threads=1)
        return labels

    return search


def build_faiss(base: np.ndarray, m: int, ef_construction: int, threads: int) -> Searcher:
    import faiss

    faiss.omp_set_num_threads(threads)
    index = faiss.IndexHNSWFlat(base.shape[1], m, faiss.METRIC_INNER_PRODUCT)
    index.hnsw.efConstruction = ef_construction
    index.add(base)
    faiss.omp_set_num_threads(1)

    def search(queries: np.ndarray, k: int, ef: int) -> np.ndarray:
        index.hnsw.efSearch = ef
        _, labels = index.search(queries, k)
        return labels

    return search


BUILDERS: dict[str, Callable[[np.ndarray, int, int, int], Searcher]] = {
    "hnswlib": build_hnswlib,
    "faiss": build_faiss,
}


def run_engine(engine: str, base: np.ndarray, queries: np.ndarray, truth: np.ndarray,
               args: argparse.Namespace, efs: list[int], dataset: str) -> list[dict[str, Any]]:
    rss_before = max_rss_mb()
    t0 = time.perf_counter()
    search = BUILDERS[engine](base, args.m, args.ef_construction, args.threads_build)
    build_seconds = time.perf_counter() - t0
    rss_growth = max_rss_mb() - rss_before
    rows = []
    for ef in efs:
        best = float("inf")
        for _ in range(args.repeats):
            t0 = time.perf_counter()
            found = search(queries, args.k, ef)
            best = min(best, time.perf_counter() - t0)
        rows.append({
            "engine": engine, "ef": ef, "recall_at_k": recall_at_k(found, truth, args.k),
            "qps": len(queries) / best, "build_seconds": build_seconds, "m": args.m,
            "ef_construction": args.ef_construction, "k": args.k, "dataset": dataset,
            "rss_growth_mb": round(rss_growth, 1),
        })
    return rows


def cmd_run(args: argparse.Namespace) -> None:
    ddir = Path(args.dataset)
    efs = [int(e) for e in args.ef.split(",")]
    engines = [e.strip() for e in args.engines.split(",") if e.strip()]
    for e in engines:
        if e not in BUILDERS:
            sys.exit(f"unknown engine {e!r}; choose from {', '.join(BUILDERS)}")
    base = normalise(read_vecs(ddir / "base.fvecs", "<f4"))
    queries = normalise(read_vecs(ddir / "query.fvecs", "<f4"))
    truth = read_vecs(ddir / "groundtruth.ivecs", "<i4")
    if args.queries:
        queries, truth = queries[: args.queries], truth[: args.queries]
    if truth.shape[1] < args.k:
        sys.exit(f"ground truth has only {truth.shape[1]} neighbours per query, k={args.k}")
    print(f"dataset {ddir.name}: base {base.shape}, queries {queries.shape}, k={args.k}, "
          f"M={args.m}, efConstruction={args.ef_construction}, "
          f"build threads={args.threads_build}, search threads=1", flush=True)
    results: list[dict[str, Any]] = []
    for engine in engines:
        rows = run_engine(engine, base, queries, truth, args, efs, ddir.name)
        gc.collect()
        print(f"\n{engine}: build {rows[0]['build_seconds']:.2f} s, "
              f"max RSS growth {rows[0]['rss_growth_mb']:.1f} MB")
        print(f"{'engine':<8} {'ef':>5} {'recall_at_k':>11} {'qps':>10} {'build_seconds':>13}")
        for r in rows:
            print(f"{r['engine']:<8} {r['ef']:>5} {r['recall_at_k']:>11.4f} "
                  f"{r['qps']:>10.0f} {r['build_seconds']:>13.2f}", flush=True)
        results.extend(rows)
    if args.json:
        Path(args.json).write_text(json.dumps(results, indent=2) + "\n")
        print(f"\nwrote {args.json}")


def group_curves(rows: list[dict[str, Any]], default: str) -> dict[str, list[tuple[float, float]]]:
    curves: dict[str, list[tuple[float, float]]] = {}
    for r in rows:
        name = str(r.get("engine") or default)
        if r.get("tier") is not None:
            name = f"{name}:{r['tier']}"
        curves.setdefault(name, []).append((float(r["recall_at_k"]), float(r["qps"])))
    return curves


def qps_at_recall(points: list[tuple[float, float]], target: float) -> float | None:
    """QPS at `target` recall, interpolated on the Pareto frontier; None if not reached."""
    frontier: list[tuple[float, float]] = []  # built from high recall down: QPS must rise
    for recall, qps in sorted(points, key=lambda p: (-p[0], -p[1])):
        if not frontier or qps > frontier[-1][1]:
            frontier.append((recall, qps))
    frontier.reverse()  # ascending recall, descending QPS
    if not frontier or frontier[-1][0] < target:
        return None
    for (r0, q0), (r1, q1) in zip(frontier, frontier[1:]):
        if r0 < target <= r1:
            return q0 + (q1 - q0) * (target - r0) / (r1 - r0)
    return frontier[0][1]  # target at or below the lowest recall measured


def fmt(x: float | None, spec: str) -> str:
    return "not reached" if x is None else format(x, spec)


def cmd_compare(args: argparse.Namespace) -> None:
    engram = group_curves(json.loads(Path(args.engram).read_text()), "engram")
    peers = group_curves(json.loads(Path(args.peers).read_text()), "peer")
    targets = [float(t) for t in args.recall.split(",")]
    out: list[dict[str, Any]] = []
    header = f"{'recall':>6} {'engram':<14} {'engram_qps':>11}"
    header += "".join(f" {p + '_qps':>12}" for p in peers)
    header += "".join(f" {'engram/' + p:>14}" for p in peers)
    print(header)
    for name, points in engram.items():
        for t in targets:
            e_qps = qps_at_recall(points, t)
            row: dict[str, Any] = {"target_recall": t, "engram": name, "engram_qps": e_qps}
            line = f"{t:>6.3f} {name:<14} {fmt(e_qps, '.0f'):>11}"
            ratios = ""
            for p, p_points in peers.items():
                p_qps = qps_at_recall(p_points, t)
                ratio = e_qps / p_qps if e_qps is not None and p_qps else None
                row[f"{p}_qps"], row[f"ratio_{p}"] = p_qps, ratio
                line += f" {fmt(p_qps, '.0f'):>12}"
                ratios += f" {fmt(ratio, '.3f'):>14}"
            print(line + ratios)
            out.append(row)
    if args.json:
        Path(args.json).write_text(json.dumps(out, indent=2) + "\n")
        print(f"\nwrote {args.json}")


def parse_args(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="command", required=True)
    run = sub.add_parser("run", help="build and query the peer engines")
    run.add_argument("--dataset", required=True, help="dir with base/query .fvecs, groundtruth.ivecs")
    run.add_argument("--engines", default="hnswlib,faiss")
    run.add_argument("--m", type=int, default=16)
    run.add_argument("--ef-construction", type=int, default=200)
    run.add_argument("--k", type=int, default=10)
    run.add_argument("--ef", default=DEFAULT_EFS, help="comma-separated efSearch values")
    run.add_argument("--threads-build", type=int, default=os.cpu_count() or 1)
    run.add_argument("--queries", type=int, default=0, help="use only the first N queries")
    run.add_argument("--repeats", type=int, default=3, help="time each ef R times, keep the best")
    run.add_argument("--json", help="write result rows to this file")
    run.set_defaults(func=cmd_run)
    cmp = sub.add_parser("compare", help="QPS at target recalls: Engram vs peers")
    cmp.add_argument("--engram", required=True, help="Engram bench JSON (list of rows)")
    cmp.add_argument("--peers", required=True, help="JSON written by `run --json`")
    cmp.add_argument("--recall", default="0.90,0.95,0.99", help="comma-separated targets")
    cmp.add_argument("--json", help="write the comparison rows to this file")
    cmp.set_defaults(func=cmd_compare)
    if argv and argv[0].startswith("-") and argv[0] not in ("-h", "--help"):
        argv = ["run", *argv]  # `run` is the default subcommand
    return parser.parse_args(argv)


def main() -> None:
    args = parse_args(sys.argv[1:])
    args.func(args)


if __name__ == "__main__":
    main()
