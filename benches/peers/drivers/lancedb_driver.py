"""LanceDB (local directory) with an explicit vector index.

Default index IVF_HNSW_FLAT with num_partitions=1: a single HNSW graph (m=M,
ef_construction=efConstruction) over raw float32 vectors, i.e. the LanceDB index closest to
plain HNSW (IVF_HNSW_SQ / IVF_HNSW_PQ add quantization, IVF_PQ has no graph). The ef axis
maps to the query's .ef(ef) with nprobes = all partitions; for --lancedb-index ivf_pq it maps
to nprobes = min(ef, num_partitions), and --lancedb-refine-factor adds exact re-ranking.
distance_type "dot" on unit vectors (= cosine). Each row's params record what was used.
verify() checks every row is indexed (list_indices) and that the query plan goes through
the index (ANNSubIndex / ANNIvfPartition), not a flat KNN scan.
"""
from __future__ import annotations

import math
import time

import numpy as np

from .base import Driver, graph_check, pad_ids

INDEX_TYPES = ("ivf_hnsw_flat", "ivf_hnsw_sq", "ivf_hnsw_pq", "ivf_pq")


class LancedbDriver(Driver):
    name = "lancedb"
    package = "lancedb"
    on_disk = True
    batch = True

    def setup(self) -> None:
        import lancedb
        import lancedb.index
        import pyarrow

        self.lancedb, self.pa = lancedb, pyarrow

    def _config(self, n: int, dim: int, m: int, ef_construction: int):
        ix, kind = self.lancedb.index, self.opts.lancedb_index
        parts = self.opts.lancedb_partitions
        if parts is None:  # HNSW: one graph; IVF_PQ: Lance's default sqrt(n)
            parts = 1 if kind != "ivf_pq" else max(1, int(math.sqrt(n)))
        self.partitions = parts
        sub = self.opts.lancedb_sub_vectors or (dim // 2 if dim % 2 == 0 else dim)
        common = {"distance_type": "dot", "num_partitions": parts}
        hnsw = {"m": m, "ef_construction": ef_construction}
        if kind == "ivf_hnsw_flat":
            return ix.HnswFlat(**common, **hnsw), {**common, **hnsw}
        if kind == "ivf_hnsw_sq":
            return ix.HnswSq(**common, **hnsw), {**common, **hnsw}
        if kind == "ivf_hnsw_pq":
            return ix.HnswPq(**common, **hnsw, num_sub_vectors=sub), \
                {**common, **hnsw, "num_sub_vectors": sub}
        return ix.IvfPq(**common, num_sub_vectors=sub), {**common, "num_sub_vectors": sub}

    def open(self, dim: int, m: int, ef_construction: int, threads: int) -> None:
        self.path = self.workdir / "lance"
        self.db = self.lancedb.connect(str(self.path))

    def build(self, base: np.ndarray, m: int, ef_construction: int, threads: int) -> None:
        pa = self.pa
        self.n, dim = base.shape
        config, self.build_params = self._config(self.n, dim, m, ef_construction)
        data = pa.table({
            "id": pa.array(np.arange(self.n, dtype=np.int64)),
            "vector": pa.FixedSizeListArray.from_arrays(pa.array(base.reshape(-1)), dim),
        })
        t0 = time.perf_counter()
        self.table = self.db.create_table("bench", data)
        t1 = time.perf_counter()
        self.table.create_index("vector", config=config)  # synchronous for a local table
        self.index_name = self.table.list_indices()[0].name
        self.table.wait_for_index([self.index_name])
        self.phases = {"create_table_seconds": t1 - t0,
                       "index_seconds": time.perf_counter() - t1}

    def _query(self, q, k: int):
        b = (self.table.search(q).distance_type("dot").limit(k)
             .nprobes(self.nprobes).select(["id", "_distance"]))
        if self.ef is not None:
            b = b.ef(self.ef)
        if self.opts.lancedb_refine_factor:
            b = b.refine_factor(self.opts.lancedb_refine_factor)
        return b

    def verify(self, queries: np.ndarray, k: int) -> dict:
        stats = self.table.index_stats(self.index_name)
        if stats.num_indexed_rows != self.n or stats.num_unindexed_rows:
            raise RuntimeError(f"lancedb: {stats.num_indexed_rows} rows indexed, "
                               f"{stats.num_unindexed_rows} not, expected {self.n}")
        self.configure(k, k)
        plan = self._query(queries[0], k).explain_plan()
        if "ANNSubIndex" not in plan and "ANNIvfPartition" not in plan:
            raise RuntimeError(f"lancedb: query plan does not use the index:\n{plan}")
        check = graph_check(
            lambda q: self._query(q, k).to_arrow()["id"].to_pylist(),
            lambda q: (self.table.search(q).distance_type("dot").limit(k).bypass_vector_index()
                       .select(["id", "_distance"]).to_arrow()["id"].to_pylist()),
            queries, k)
        return {"index": stats.index_type, "distance_type": stats.distance_type,
                "indexed_rows": stats.num_indexed_rows, "build": self.build_params,
                "plan": " / ".join(line.strip().split(":")[0] for line in plan.splitlines()),
                "graph_check": check}

    def configure(self, ef: int, k: int) -> dict:
        if self.opts.lancedb_index == "ivf_pq":
            self.ef, self.nprobes = None, min(ef, self.partitions)
        else:
            # Lance rejects ef < the candidates it must return (k, or k * refine_factor);
            # hnswlib / usearch / qdrant silently search with max(ef, k); do that explicitly.
            self.ef = max(ef, k * (self.opts.lancedb_refine_factor or 1))
            self.nprobes = self.opts.lancedb_nprobes or self.partitions
        params = {"index_type": self.opts.lancedb_index.upper(), "nprobes": self.nprobes,
                  "num_partitions": self.partitions}
        if self.ef is not None:
            params["ef"] = self.ef
        if self.opts.lancedb_refine_factor:
            params["refine_factor"] = self.opts.lancedb_refine_factor
        return params

    def search_one(self, q: np.ndarray, k: int):
        return self._query(q, k).to_arrow()["id"].to_pylist()

    def search_batch(self, queries: np.ndarray, k: int) -> np.ndarray:
        t = self._query(list(queries), k).to_arrow()
        qi, ids = t["query_index"].to_numpy(), t["id"].to_numpy()
        order = np.argsort(qi, kind="stable")  # rows are sorted by distance within a query
        rows: list[list[int]] = [[] for _ in range(len(queries))]
        for i in order:
            rows[qi[i]].append(int(ids[i]))
        return pad_ids(rows, k)
