"""Qdrant Edge (qdrant-edge-py): the real Qdrant segment / HNSW engine, in-process.

Qdrant only builds an HNSW graph in its optimizer, for segments above
`indexing_threshold` (KB of vectors), and even an HNSW segment is searched by a plain scan
below `full_scan_threshold` (KB). With the defaults the 10k set (2 MB of vectors) is never
indexed: optimize() does nothing and all points stay in one plain, scanned segment (checked
with qdrant-edge-py 0.9.0). The driver sets both to 1 KB and one target segment, upserts,
flushes, then calls optimize() (blocks until the optimizer has nothing left to do) and
verify() checks that every point is in an "hnsw" segment (ShardInfo.indexed_vectors_count,
segment.json index type) and that HNSW answers at ef=k differ from exact=True ones (a scan
would be exact); the recall / QPS curve at small ef confirms it.

max_search_threads defaults to 1 (--qdrant-search-threads): with Qdrant's default (one
thread per CPU) each single query is handed to a pool and used ~1.6 cores here while
running slower, which is not a single-threaded search.
"""
from __future__ import annotations

import json
import time

import numpy as np

from .base import Driver, graph_check, pad_ids


class QdrantDriver(Driver):
    name = "qdrant"
    package = "qdrant-edge-py"
    on_disk = True
    batch = True

    def setup(self) -> None:
        import qdrant_edge

        self.qe = qdrant_edge

    def open(self, dim: int, m: int, ef_construction: int, threads: int) -> None:
        qe = self.qe
        hnsw = qe.HnswIndexConfig(m=m, ef_construct=ef_construction, full_scan_threshold=1,
                                  max_indexing_threads=threads)
        config = qe.EdgeConfig(
            vectors=qe.EdgeVectorParams(size=dim, distance=qe.Distance.Cosine),
            hnsw_config=hnsw,
            optimizers=qe.EdgeOptimizersConfig(indexing_threshold=1, default_segment_number=1),
            max_search_threads=self.opts.qdrant_search_threads or None,
        )
        self.path = self.workdir / "shard"
        self.shard = qe.EdgeShard.create(str(self.path), config)

    def build(self, base: np.ndarray, m: int, ef_construction: int, threads: int) -> None:
        qe = self.qe
        self.n = len(base)
        t0 = time.perf_counter()
        batch = self.opts.ingest_batch
        for start in range(0, len(base), batch):
            chunk = base[start:start + batch].tolist()
            points = [qe.Point(id=start + i, vector=v) for i, v in enumerate(chunk)]
            self.shard.update(qe.UpdateOperation.upsert_points(points))
        self.shard.flush()
        t1 = time.perf_counter()
        self.shard.optimize()  # builds the HNSW segment; returns when no optimization is left
        self.phases = {"upsert_flush_seconds": t1 - t0,
                       "optimize_seconds": time.perf_counter() - t1}

    def verify(self, queries: np.ndarray, k: int) -> dict:
        info = self.shard.info()
        if info.points_count != self.n or info.indexed_vectors_count != self.n:
            raise RuntimeError(f"qdrant: {info.indexed_vectors_count} of {info.points_count} "
                               f"points indexed, expected all {self.n}")
        segments = []
        for seg in sorted((self.path / "segments").glob("*/segment.json")):
            vec = json.loads(seg.read_text())["config"]["vector_data"][""]
            segments.append({"index": vec["index"]["type"], "storage": vec["storage_type"],
                             **vec["index"].get("options", {})})
        if not any(s["index"] == "hnsw" for s in segments):
            raise RuntimeError(f"qdrant: no HNSW segment after optimize(): {segments}")
        qe = self.qe

        def ids(q, params):
            req = qe.QueryRequest(limit=k, query=qe.Query.Nearest(q.tolist()), params=params)
            return [p.id for p in self.shard.query(req)]

        check = graph_check(lambda q: ids(q, qe.SearchParams(hnsw_ef=k)),
                            lambda q: ids(q, qe.SearchParams(exact=True)), queries, k)
        return {"index": "HNSW segment (Distance.Cosine)", "segments": segments,
                "indexed_vectors": info.indexed_vectors_count, "points": info.points_count,
                "graph_check": check}

    def configure(self, ef: int, k: int) -> dict:
        self.params = self.qe.SearchParams(hnsw_ef=ef, exact=False)
        return {"hnsw_ef": ef, "exact": False}  # Qdrant searches with max(hnsw_ef, limit)

    def _request(self, q: np.ndarray, k: int):
        return self.qe.QueryRequest(limit=k, query=self.qe.Query.Nearest(q.tolist()),
                                    params=self.params, with_payload=False, with_vector=False)

    def search_one(self, q: np.ndarray, k: int):
        return [p.id for p in self.shard.query(self._request(q, k))]

    def search_batch(self, queries: np.ndarray, k: int) -> np.ndarray:
        batch = self.qe.QueryBatchRequest([self._request(q, k) for q in queries])
        return pad_ids([[p.id for p in hits] for hits in self.shard.query_batch(batch)], k)

    def close(self) -> None:
        self.shard.close()
