#!/usr/bin/env python3
"""Peer vector-search engines (hnswlib, FAISS, USearch, Qdrant, Milvus Lite, LanceDB) vs Engram.

Install:  pip install -r benches/peers/requirements.txt

Subcommands (``run`` is the default when the first argument is an option):

  peers.py [run] --dataset DIR [--engines hnswlib,faiss | all] [--m 16] [--ef-construction 200]
                 [--k 10] [--ef 10,16,...,256] [--threads-build N] [--queries N]
                 [--repeats 3] [--concurrency 16] [--latency-ef LIST] [--latency-queries 2000]
                 [--ingest-batch 1000] [--engine-timeout S] [--workdir DIR] [--json OUT]
                 [--usearch-metric ip|cos] [--qdrant-search-threads 1] [--milvus-metric
                 COSINE|IP] [--lancedb-index ...] [--lancedb-partitions P] [--lancedb-nprobes P]
                 [--lancedb-sub-vectors S] [--lancedb-refine-factor R]
      Builds each engine on DIR/base.fvecs (TEXMEX), queries DIR/query.fvecs and scores
      recall@k against DIR/groundtruth.ivecs, once per ef. Metric is angular: base and
      queries are L2-normalised (float32) and searched by inner product / cosine. Ids are
      row numbers of base.fvecs. Each engine runs in its own child process (`peers.py one`,
      hidden) with its own temp dir (removed afterwards), so its memory figures are its own
      and a crash only loses that engine: it is reported as an error record
      {engine, error, ...} with no measurements, and the run goes on.

  peers.py compare --engram ENGRAM.json --peers PEERS.json [--recall 0.90,0.95,0.99]
                   [--peer-qps qps|qps_batch|qps_concurrent] [--json OUT]
      ENGRAM.json: a list of {ef, recall_at_k, qps, [engine | tier]}; rows are grouped into
      curves by "engine"/"tier" when present, else one curve named "engram". PEERS.json is
      the output of ``run --json`` (error records are skipped). For each curve and target
      recall the QPS is linearly interpolated between the two points bracketing the target
      on the curve's recall/QPS Pareto frontier (identical to the raw points when QPS falls
      as recall rises); a target above the best recall reached is "not reached". Prints
      target, engram QPS, each peer's QPS and the ratio engram/peer. --peer-qps picks the
      peer figure (default "qps", one query per call; a null value, e.g. qps_batch of an
      engine without batch search, falls back to "qps"). Before the six-engine version,
      a peer's "qps" was its batch figure: --peer-qps qps_batch gives that meaning back.

Engines, index and parameter mapping (M = --m, efC = --ef-construction, ef = each --ef value):
  hnswlib  hnswlib.Index(space="ip"), M, ef_construction=efC; set_ef(ef).
  faiss    IndexHNSWFlat(METRIC_INNER_PRODUCT), M, hnsw.efConstruction=efC; hnsw.efSearch=ef.
  usearch  usearch.Index(metric="ip" [--usearch-metric cos], dtype="f32", connectivity=M,
           expansion_add=efC); expansion_search=ef.
  qdrant   qdrant_edge EdgeShard (Qdrant's segment engine in-process; on disk), Distance.Cosine,
           HnswIndexConfig(m=M, ef_construct=efC), indexing_threshold and
           full_scan_threshold = 1 KB (with Qdrant's defaults the 10k set is never indexed: it
           stays in one plain, scanned segment), one target segment, max_search_threads=1 [--qdrant-search-threads;
           Qdrant's default pool of one thread per CPU makes a single query use ~1.6 cores
           here, and runs slower]; ingest waits for optimize() and checks all points are in
           an "hnsw" segment (the optimizer also leaves empty appendable "plain" segments),
           then that HNSW search at ef=k differs from SearchParams(exact=True) on sample
           queries; SearchParams(hnsw_ef=ef, exact=False).
  milvus   milvus-lite via pymilvus MilvusClient(uri=DIR/milvus.db): index_type HNSW,
           metric COSINE [--milvus-metric IP], params M, efConstruction; search param ef.
           milvus-lite 3.x is a pure-Python engine whose HNSW is FAISS IndexHNSWFlat; its gRPC
           server runs on threads of the same process (no child process), and every search
           also runs Python loops over all n rows (dedup / delete masks), so its per-query
           cost grows linearly with n whatever the ef: it is not the C++ Milvus server.
  lancedb  LanceDB table (on disk), IVF_HNSW_FLAT with num_partitions=1 (one HNSW graph over
           raw float32 vectors: the LanceDB index closest to HNSW), m=M, ef_construction=efC,
           distance "dot"; query .ef(ef).nprobes(1). --lancedb-index ivf_hnsw_sq|ivf_hnsw_pq|
           ivf_pq picks another index (ivf_pq: ef -> nprobes), --lancedb-refine-factor R
           adds exact re-ranking. ef is raised to k * refine_factor (at least k) when lower,
           which Lance requires. Ingest checks all rows are indexed, the query plan goes
           through ANNSubIndex, and answers at ef=k differ from bypass_vector_index().
           Every row's "params" holds the parameters actually used.
  ef below k: hnswlib, usearch and qdrant search with max(ef, k) candidates; FAISS (and so
  milvus-lite) uses efSearch as given, so recall drops; LanceDB rejects it (the driver raises
  ef to k). The default ef list starts at k=10. Each row's "index" field is what the engine
  reports about its built index (the check that searches really use it).

How each figure is measured (identically for every engine):
  * build_seconds: wall seconds from handing over the first vector until the index is
    built and searchable through it (for the databases: insert in --ingest-batch batches,
    flush, build/optimize the index and wait for it); ingest_vectors_per_s = n / that.
    ingest_phases splits it where the engine has separate steps. Build threads:
    --threads-build (default: all cores; LanceDB picks its own).
  * qps: ONE query per call in a Python loop, one thread: nq / wall seconds of the loop
    (best of --repeats). Every engine, in-process library or client/server, pays its
    per-call cost (Python binding, request building, RPC, result decoding) the same way.
    recall_at_k comes from these results: |returned top-k ∩ true top-k| / k, averaged.
  * qps_batch: all queries in one call (engines with a batch API: hnswlib, faiss, usearch
    with one search thread; qdrant query_batch; milvus search(data=[...]); lancedb
    multi-vector query), best of --repeats; null if none. cpu_util / cpu_util_batch =
    process CPU seconds / wall seconds during those timings: above 1.0 means the engine
    used more than one core internally even though the caller is single-threaded (LanceDB
    runs a multi-vector query's sub-queries in parallel: cpu_util_batch ~1.3-1.5).
  * latency: --concurrency C threads (ThreadPoolExecutor) start together and issue
    single-query calls, --latency-queries calls in total, cycling over the query set;
    each call is timed with perf_counter -> p50_ms, p95_ms, p99_ms; qps_concurrent =
    calls / wall seconds. recall_concurrent checks the answers stay right under load.
    At every ef, or only at the --latency-ef values (other rows get nulls). The callers
    are Python threads of one process: an engine that holds the GIL while it searches (or
    is Python itself, like milvus-lite's server) serialises them, and the tail includes
    GIL hand-offs (switch interval 5 ms), the same for every engine; p99 on a 2-core
    machine mostly measures that queueing, not the engine's own latency.
  * memory_bytes: growth of VmRSS (/proc/self/status) from just before the vectors are
    handed to the engine to just after the build (each after gc + malloc_trim), plus the
    growth of the RSS of the engine's child processes (found via /proc; none for these
    six); per vector in memory_bytes_per_vector. The baseline is taken after the library
    is imported, the dataset loaded and the engine opened (server started, empty
    collection / table / shard created: that cost is memory_detail.engine_open_bytes).
    VmRSS also grows by the library's own code pages first touched during the build
    (tens of MB for LanceDB), so index_memory_bytes[_per_vector] = growth of anonymous
    memory + RSS of mmapped files inside the engine's data dir (+ children) is the closer
    figure for the index itself. At 10k vectors fixed costs (lock tables, runtimes,
    caches) dominate both; compare per-vector figures on the large set. The *_after_search
    variants are measured after the sweep (lazily loaded indexes / caches show up
    there). rss_growth_mb = memory_bytes in MiB (the old key); peak_rss_growth_mb from
    VmHWM.
  * disk_bytes_per_vector: allocated bytes (st_blocks) of the engine's data directory after
    the build, including WAL / manifests; null for the in-memory libraries.
"""
from __future__ import annotations

import argparse
import ctypes
import difflib
import gc
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
import traceback
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any, Sequence

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from drivers import ENGINES, driver_class  # noqa: E402
from drivers.base import descendants_rss, dir_bytes, mapped_rss, proc_status  # noqa: E402

DEFAULT_EFS = "10,16,20,32,40,64,80,128,200,256"


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


def recall_at_k(found: Sequence[Sequence[int]], truth: np.ndarray, k: int) -> float:
    hits = sum(len(set(np.asarray(f)[:k].tolist()) & set(t[:k].tolist()))
               for f, t in zip(found, truth))
    return hits / (k * len(found))


def load_dataset(args: argparse.Namespace) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    ddir = Path(args.dataset)
    base = normalise(read_vecs(ddir / "base.fvecs", "<f4"))
    queries = normalise(read_vecs(ddir / "query.fvecs", "<f4"))
    truth = read_vecs(ddir / "groundtruth.ivecs", "<i4")
    if args.queries:
        queries, truth = queries[: args.queries], truth[: args.queries]
    if truth.shape[1] < args.k:
        sys.exit(f"ground truth has only {truth.shape[1]} neighbours per query, k={args.k}")
    return base, queries, truth


def parse_engines(spec: str) -> list[str]:
    names = list(ENGINES) if spec.strip() == "all" else \
        [e.strip() for e in spec.split(",") if e.strip()]
    for e in names:
        if e not in ENGINES:
            close = difflib.get_close_matches(e, ENGINES, n=1)
            hint = f" (did you mean {close[0]!r}?)" if close else ""
            sys.exit(f"unknown engine {e!r}{hint}; choose from {', '.join(ENGINES)} or 'all'")
    if not names:
        sys.exit(f"no engine given; choose from {', '.join(ENGINES)} or 'all'")
    return list(dict.fromkeys(names))


# ---------------------------------------------------------------- one engine (child process)

def settle_memory() -> None:
    """Collect garbage and hand freed heap back to the OS, so RSS reflects live data."""
    gc.collect()
    try:
        ctypes.CDLL("libc.so.6").malloc_trim(0)
    except (OSError, AttributeError):
        pass


def memory_now(datadir: Path) -> dict[str, int]:
    settle_memory()
    s = proc_status()
    kids, nkids = descendants_rss()
    return {"rss": s.get("VmRSS", 0), "hwm": s.get("VmHWM", 0), "anon": s.get("RssAnon", 0),
            "file": s.get("RssFile", 0), "data": mapped_rss(datadir), "kids": kids,
            "nkids": nkids}


def memory_growth(a: dict[str, int], b: dict[str, int]) -> dict[str, int]:
    """RSS growth from a to b: `total` = VmRSS + children's RSS; `index` = anonymous memory +
    mmapped files of the engine's data dir + children (no library code pages)."""
    kids = b["kids"] - a["kids"]
    return {"total": b["rss"] - a["rss"] + kids,
            "index": b["anon"] - a["anon"] + b["data"] - a["data"] + kids,
            "anon": b["anon"] - a["anon"], "file": b["file"] - a["file"],
            "data_files": b["data"] - a["data"], "children": kids}


def timed_sequential(driver, queries: np.ndarray, k: int, repeats: int):
    """Best-of-`repeats` wall seconds of one search_one call per query, its CPU/wall, ids."""
    best, cpu_util, found = float("inf"), 0.0, []
    for _ in range(repeats):
        out = []
        c0, t0 = time.process_time(), time.perf_counter()
        for q in queries:
            out.append(driver.search_one(q, k))
        wall, cpu = time.perf_counter() - t0, time.process_time() - c0
        if wall < best:
            best, cpu_util = wall, cpu / wall
        found = out
    return best, cpu_util, found


def timed_batch(driver, queries: np.ndarray, k: int, repeats: int):
    best, cpu_util, found = float("inf"), 0.0, None
    for _ in range(repeats):
        c0, t0 = time.process_time(), time.perf_counter()
        found = driver.search_batch(queries, k)
        wall, cpu = time.perf_counter() - t0, time.process_time() - c0
        if wall < best:
            best, cpu_util = wall, cpu / wall
    return best, cpu_util, found


def timed_concurrent(driver, queries: np.ndarray, truth: np.ndarray, k: int,
                     threads: int, total: int) -> dict[str, Any]:
    """`threads` workers, started together, issue `total` single-query calls between them
    (call j uses query j mod nq); per-call latency by perf_counter."""
    nq = len(queries)
    start = [0.0]
    barrier = threading.Barrier(threads, action=lambda: start.__setitem__(0, time.perf_counter()))

    def worker(w: int):
        lat, hits = [], 0
        barrier.wait()
        for j in range(w, total, threads):
            qi = j % nq
            t0 = time.perf_counter()
            ids = driver.search_one(queries[qi], k)
            lat.append(time.perf_counter() - t0)
            hits += len(set(np.asarray(ids)[:k].tolist()) & set(truth[qi, :k].tolist()))
        return lat, hits, time.perf_counter()

    with ThreadPoolExecutor(max_workers=threads) as pool:
        results = list(pool.map(worker, range(threads)))
    wall = max(r[2] for r in results) - start[0]
    lat_ms = np.array([x for r in results for x in r[0]]) * 1e3
    return {
        "qps_concurrent": total / wall,
        "p50_ms": float(np.percentile(lat_ms, 50)),
        "p95_ms": float(np.percentile(lat_ms, 95)),
        "p99_ms": float(np.percentile(lat_ms, 99)),
        "recall_concurrent": sum(r[1] for r in results) / (k * total),
    }


def run_engine(engine: str, args: argparse.Namespace, workdir: Path) -> list[dict[str, Any]]:
    base, queries, truth = load_dataset(args)
    efs = [int(e) for e in args.ef.split(",")]
    latency_efs = set(efs) if not args.latency_ef else {int(e) for e in args.latency_ef.split(",")}
    n, k = len(base), args.k
    driver = driver_class(engine)(workdir, args)
    driver.setup()
    log = lambda msg: print(f"[{engine}] {msg}", file=sys.stderr, flush=True)  # noqa: E731

    mem_open = memory_now(workdir)
    driver.open(base.shape[1], args.m, args.ef_construction, args.threads_build)
    mem0 = memory_now(workdir)
    t0 = time.perf_counter()
    driver.build(base, args.m, args.ef_construction, args.threads_build)
    build_seconds = time.perf_counter() - t0
    index_info = driver.verify(queries, k)
    mem1 = memory_now(workdir)
    grew = memory_growth(mem0, mem1)
    disk = dir_bytes(workdir) if driver.on_disk else None
    log(f"built in {build_seconds:.2f} s, memory {grew['total'] / 2**20:.1f} MiB "
        f"(index {grew['index'] / 2**20:.1f} MiB)"
        + (f", disk {disk / 2**20:.1f} MiB" if disk is not None else "") + f": {index_info}")

    rows = []
    for ef in efs:
        params = driver.configure(ef, k)
        seq_s, cpu_seq, found = timed_sequential(driver, queries, k, args.repeats)
        row: dict[str, Any] = {
            "engine": engine, "ef": ef, "params": params,
            "recall_at_k": recall_at_k(found, truth, k), "qps": len(queries) / seq_s,
            "qps_batch": None, "recall_batch": None, "cpu_util": round(cpu_seq, 2),
            "cpu_util_batch": None,
        }
        if driver.batch:
            batch_s, cpu_batch, bfound = timed_batch(driver, queries, k, args.repeats)
            row.update(qps_batch=len(queries) / batch_s, recall_batch=recall_at_k(bfound, truth, k),
                       cpu_util_batch=round(cpu_batch, 2))
        row.update(qps_concurrent=None, concurrency=args.concurrency, p50_ms=None, p95_ms=None,
                   p99_ms=None, recall_concurrent=None, latency_queries=None)
        if ef in latency_efs and args.concurrency > 0 and args.latency_queries > 0:
            row.update(timed_concurrent(driver, queries, truth, k, args.concurrency,
                                        args.latency_queries),
                       latency_queries=args.latency_queries)
        rows.append(row)
        log(f"ef={ef} recall={row['recall_at_k']:.4f} qps={row['qps']:.0f}"
            + (f" qps_batch={row['qps_batch']:.0f}" if row["qps_batch"] else "")
            + (f" p99={row['p99_ms']:.2f}ms" if row["p99_ms"] is not None else ""))

    after_search = memory_growth(mem0, memory_now(workdir))
    common = {
        "build_seconds": build_seconds, "ingest_vectors_per_s": n / build_seconds,
        "ingest_phases": getattr(driver, "phases", None),
        "memory_bytes": grew["total"], "memory_bytes_per_vector": grew["total"] / n,
        "index_memory_bytes": grew["index"], "index_memory_bytes_per_vector": grew["index"] / n,
        "memory_bytes_after_search": after_search["total"],
        "index_memory_bytes_after_search": after_search["index"],
        "memory_detail": {
            "rss_anon_bytes": grew["anon"], "rss_file_bytes": grew["file"],
            "data_file_rss_bytes": grew["data_files"], "child_rss_bytes": grew["children"],
            "child_processes": mem1["nkids"],
            "engine_open_bytes": memory_growth(mem_open, mem0)["total"],
        },
        "rss_growth_mb": round(grew["total"] / 2**20, 1),
        "peak_rss_growth_mb": round(max(0, mem1["hwm"] - mem0["hwm"]) / 2**20, 1),
        "disk_bytes": disk, "disk_bytes_per_vector": None if disk is None else disk / n,
        "m": args.m, "ef_construction": args.ef_construction, "k": k,
        "dataset": Path(args.dataset).name, "vectors": n, "queries": len(queries),
        "version": driver.version, "threads_build": args.threads_build, "index": index_info,
    }
    driver.close()
    return [{**r, **common} for r in rows]


def cmd_one(args: argparse.Namespace) -> None:
    spec = json.loads(Path(args.spec).read_text())
    run_args = argparse.Namespace(**spec["args"])
    workdir = Path(spec["workdir"])
    try:
        result: dict[str, Any] = {"rows": run_engine(spec["engine"], run_args, workdir / "data")}
    except BaseException as e:  # report anything, even SystemExit, as this engine's error
        result = {"error": f"{type(e).__name__}: {e}", "traceback": traceback.format_exc()}
    Path(spec["result"]).write_text(json.dumps(result))
    sys.stdout.flush()
    sys.stderr.flush()
    # Skip interpreter teardown: some engines' background threads / servers can hang or
    # crash at exit, and everything we need has been written.
    os._exit(0)


# ---------------------------------------------------------------- run (parent)

def run_child(engine: str, args: argparse.Namespace) -> tuple[list[dict[str, Any]], str | None]:
    workdir = Path(tempfile.mkdtemp(prefix=f"peers-{engine}-", dir=args.workdir))
    (workdir / "data").mkdir()
    spec_path, result_path = workdir / "spec.json", workdir / "result.json"
    spec_path.write_text(json.dumps({"engine": engine, "args": vars(args) | {"func": None},
                                     "workdir": str(workdir), "result": str(result_path)}))
    cmd = [sys.executable, str(Path(__file__).resolve()), "one", "--spec", str(spec_path)]
    proc = subprocess.Popen(cmd, start_new_session=True)  # own group: kill it whole on timeout
    try:
        rc = proc.wait(timeout=args.engine_timeout or None)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()
        rc = None
    try:
        if rc is None:
            return [], f"timed out after {args.engine_timeout} s (killed)"
        if not result_path.exists():
            return [], f"engine process exited with status {rc} and no result"
        result = json.loads(result_path.read_text())
        if "error" in result:
            print(result.get("traceback", ""), file=sys.stderr)
            return [], result["error"]
        return result["rows"], None
    finally:
        try:  # a process the engine left behind must not outlive the run
            os.killpg(proc.pid, signal.SIGKILL)
        except (ProcessLookupError, PermissionError):
            pass
        shutil.rmtree(workdir, ignore_errors=True)


def fmt_opt(x: float | None, spec: str, width: int) -> str:
    return f"{'-':>{width}}" if x is None else f"{x:>{width}{spec}}"


def print_rows(rows: list[dict[str, Any]]) -> None:
    r0 = rows[0]
    disk = r0["disk_bytes_per_vector"]
    print(f"\n{r0['engine']} {r0['version']}: build {r0['build_seconds']:.2f} s "
          f"({r0['ingest_vectors_per_s']:.0f} vectors/s), RSS growth "
          f"{r0['memory_bytes'] / 2**20:.1f} MiB ({r0['memory_bytes_per_vector']:.0f} B/vector; "
          f"anon + data files {r0['index_memory_bytes_per_vector']:.0f} B/vector)"
          + (f", disk {disk:.0f} B/vector" if disk is not None else "")
          + f"; index: {r0['index'].get('index', '')}")
    print(f"{'engine':<8} {'ef':>5} {'recall_at_k':>11} {'qps':>9} {'qps_batch':>10} "
          f"{'qps_conc':>9} {'p50_ms':>8} {'p99_ms':>8} {'cpu':>5}  params")
    for r in rows:
        params = {key: v for key, v in r["params"].items() if not (key == "ef" and v == r["ef"])}
        print(f"{r['engine']:<8} {r['ef']:>5} {r['recall_at_k']:>11.4f} {r['qps']:>9.0f} "
              f"{fmt_opt(r['qps_batch'], '.0f', 10)} {fmt_opt(r['qps_concurrent'], '.0f', 9)} "
              f"{fmt_opt(r['p50_ms'], '.3f', 8)} {fmt_opt(r['p99_ms'], '.3f', 8)} "
              f"{r['cpu_util']:>5.2f}  {json.dumps(params) if params else ''}", flush=True)


def cmd_run(args: argparse.Namespace) -> None:
    engines = parse_engines(args.engines)
    efs = [int(e) for e in args.ef.split(",")]  # validate before spawning anything
    if args.latency_ef:
        [int(e) for e in args.latency_ef.split(",")]
    base, queries, _ = load_dataset(args)
    print(f"dataset {Path(args.dataset).name}: base {base.shape}, queries {queries.shape}, "
          f"k={args.k}, M={args.m}, efConstruction={args.ef_construction}, "
          f"build threads={args.threads_build}, search: 1 thread, 1 query per call "
          f"(+ batch), latency: {args.concurrency} threads x {args.latency_queries} calls "
          f"at ef {args.latency_ef or 'all'}; engines: {', '.join(engines)}; efs {efs}",
          flush=True)
    del base, queries
    results: list[dict[str, Any]] = []
    failed: list[tuple[str, str]] = []
    for engine in engines:
        t0 = time.perf_counter()
        rows, error = run_child(engine, args)
        if error is not None:
            print(f"\n{engine}: FAILED ({time.perf_counter() - t0:.0f} s): {error}", flush=True)
            failed.append((engine, error))
            results.append({"engine": engine, "error": error, "dataset": Path(args.dataset).name})
            continue
        print_rows(rows)
        print(f"({engine}: {time.perf_counter() - t0:.0f} s)", flush=True)
        results.extend(rows)
    if failed:
        print("\nFAILED engines: " + "; ".join(f"{e}: {msg}" for e, msg in failed))
    if args.json:
        Path(args.json).write_text(json.dumps(results, indent=2) + "\n")
        print(f"\nwrote {args.json}")
    if failed and len(failed) == len(engines):
        sys.exit(1)


# ---------------------------------------------------------------- compare

def group_curves(rows: list[dict[str, Any]], default: str,
                 qps_key: str = "qps") -> dict[str, list[tuple[float, float]]]:
    curves: dict[str, list[tuple[float, float]]] = {}
    for r in rows:
        if r.get("error") is not None or r.get("recall_at_k") is None:
            continue  # a failed engine's error record
        name = str(r.get("engine") or default)
        if r.get("tier") is not None:
            name = f"{name}:{r['tier']}"
        qps = r.get(qps_key)
        if qps is None:
            qps = r["qps"]
        curves.setdefault(name, []).append((float(r["recall_at_k"]), float(qps)))
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
    peer_rows = json.loads(Path(args.peers).read_text())
    for r in peer_rows:
        if r.get("error") is not None:
            print(f"note: peer {r.get('engine')} failed in that run: {r['error']}")
    peers = group_curves(peer_rows, "peer", args.peer_qps)
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


# ---------------------------------------------------------------- CLI

def add_run_args(run: argparse.ArgumentParser) -> None:
    run.add_argument("--dataset", required=True, help="dir with base/query .fvecs, groundtruth.ivecs")
    run.add_argument("--engines", default="hnswlib,faiss",
                     help=f"comma-separated, or 'all' ({','.join(ENGINES)})")
    run.add_argument("--m", type=int, default=16)
    run.add_argument("--ef-construction", type=int, default=200)
    run.add_argument("--k", type=int, default=10)
    run.add_argument("--ef", default=DEFAULT_EFS, help="comma-separated efSearch values")
    run.add_argument("--threads-build", type=int, default=os.cpu_count() or 1)
    run.add_argument("--queries", type=int, default=0, help="use only the first N queries")
    run.add_argument("--repeats", type=int, default=3, help="time each ef R times, keep the best")
    run.add_argument("--concurrency", type=int, default=16,
                     help="threads for the latency measurement (0: skip it)")
    run.add_argument("--latency-ef", default="",
                     help="comma-separated efs to measure latency at (default: every ef)")
    run.add_argument("--latency-queries", type=int, default=2000,
                     help="single-query calls in total per latency measurement")
    run.add_argument("--ingest-batch", type=int, default=1000,
                     help="vectors per insert call for qdrant / milvus")
    run.add_argument("--engine-timeout", type=float, default=0,
                     help="kill an engine's process after this many seconds (0: no limit)")
    run.add_argument("--workdir", default=None,
                     help="parent dir of the per-engine temp dirs (default: system temp)")
    run.add_argument("--usearch-metric", default="ip", choices=["ip", "cos"])
    run.add_argument("--qdrant-search-threads", type=int, default=1,
                     help="EdgeConfig.max_search_threads (0: Qdrant's default, one per CPU)")
    run.add_argument("--milvus-metric", default="COSINE", choices=["COSINE", "IP"])
    run.add_argument("--lancedb-index", default="ivf_hnsw_flat",
                     choices=["ivf_hnsw_flat", "ivf_hnsw_sq", "ivf_hnsw_pq", "ivf_pq"])
    run.add_argument("--lancedb-partitions", type=int, default=None,
                     help="IVF partitions (default: 1 for the HNSW indexes, sqrt(n) for ivf_pq)")
    run.add_argument("--lancedb-nprobes", type=int, default=None,
                     help="HNSW indexes: partitions probed (default: all)")
    run.add_argument("--lancedb-sub-vectors", type=int, default=None,
                     help="PQ sub-vectors (default: dim/2)")
    run.add_argument("--lancedb-refine-factor", type=int, default=None)
    run.add_argument("--json", help="write result rows to this file")


def parse_args(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="command", required=True, metavar="{run,compare}")
    run = sub.add_parser("run", help="build and query the peer engines")
    add_run_args(run)
    run.set_defaults(func=cmd_run)
    cmp = sub.add_parser("compare", help="QPS at target recalls: Engram vs peers")
    cmp.add_argument("--engram", required=True, help="Engram bench JSON (list of rows)")
    cmp.add_argument("--peers", required=True, help="JSON written by `run --json`")
    cmp.add_argument("--recall", default="0.90,0.95,0.99", help="comma-separated targets")
    cmp.add_argument("--peer-qps", default="qps", choices=["qps", "qps_batch", "qps_concurrent"],
                     help="which peer QPS figure to compare against (default: qps)")
    cmp.add_argument("--json", help="write the comparison rows to this file")
    cmp.set_defaults(func=cmd_compare)
    one = sub.add_parser("one")  # internal: one engine in a child process of `run`
    one.add_argument("--spec", required=True)
    one.set_defaults(func=cmd_one)
    if argv and argv[0].startswith("-") and argv[0] not in ("-h", "--help"):
        argv = ["run", *argv]  # `run` is the default subcommand
    return parser.parse_args(argv)


def main() -> None:
    args = parse_args(sys.argv[1:])
    args.func(args)


if __name__ == "__main__":
    main()
