"""Milvus Lite through pymilvus MilvusClient (local .db URI), index_type HNSW.

milvus-lite 3.x is not the C++ Milvus: it is a pure-Python engine (parquet segments, WAL,
memtable) behind a local gRPC server that pymilvus starts on threads of *this* process (no
child process; the harness still adds the RSS of any descendants, and reports how many it
found). Its HNSW index is FAISS IndexHNSWFlat per flushed segment (M, efConstruction; COSINE
= inner product on normalised vectors; search param "ef" = efSearch). Its supported index
types are FLAT/BRUTE_FORCE, HNSW, HNSW_SQ, IVF_FLAT, IVF_SQ8 (IVF_PQ is reserved, not built).

Ingest = insert in batches, flush (memtable -> one segment), create_index, load_collection
(builds the segment's HNSW synchronously). verify() checks describe_index reports every row
indexed and that the segment's .hnsw.idx sidecar exists; rows still in the memtable would
be brute-forced, so the flush matters.
"""
from __future__ import annotations

import time

import numpy as np

from .base import Driver, pad_ids

COLLECTION = "bench"


class MilvusDriver(Driver):
    name = "milvus"
    package = "milvus-lite"
    on_disk = True
    batch = True

    @property
    def version(self) -> str:
        import importlib.metadata as md

        return f"{md.version('milvus-lite')} (pymilvus {md.version('pymilvus')})"

    def setup(self) -> None:
        import faiss  # the HNSW inside milvus-lite
        from pymilvus import DataType, MilvusClient

        self.faiss, self.MilvusClient, self.DataType = faiss, MilvusClient, DataType

    def open(self, dim: int, m: int, ef_construction: int, threads: int) -> None:
        self.metric = self.opts.milvus_metric
        self.path = self.workdir / "milvus.db"
        c = self.client = self.MilvusClient(uri=str(self.path))  # starts the local server
        schema = c.create_schema(auto_id=False, enable_dynamic_field=False)
        schema.add_field("id", self.DataType.INT64, is_primary=True)
        schema.add_field("vec", self.DataType.FLOAT_VECTOR, dim=dim)
        c.create_collection(COLLECTION, schema=schema)

    def build(self, base: np.ndarray, m: int, ef_construction: int, threads: int) -> None:
        self.faiss.omp_set_num_threads(threads)  # build threads (FAISS in this process)
        self.n, c = len(base), self.client
        t0 = time.perf_counter()
        batch = self.opts.ingest_batch
        for start in range(0, len(base), batch):
            c.insert(COLLECTION, [{"id": start + i, "vec": v}
                                  for i, v in enumerate(base[start:start + batch])])
        c.flush(COLLECTION)
        t1 = time.perf_counter()
        ip = c.prepare_index_params()
        ip.add_index(field_name="vec", index_type="HNSW", metric_type=self.metric,
                     params={"M": m, "efConstruction": ef_construction})
        c.create_index(COLLECTION, ip)
        c.load_collection(COLLECTION)
        self.phases = {"insert_flush_seconds": t1 - t0,
                       "index_seconds": time.perf_counter() - t1}
        self.faiss.omp_set_num_threads(1)  # nq>1 FAISS searches would use OpenMP otherwise

    def verify(self, queries: np.ndarray, k: int) -> dict:
        d = self.client.describe_index(COLLECTION, "vec")
        if d.get("index_type") != "HNSW" or d.get("indexed_rows") != self.n \
                or d.get("pending_index_rows"):
            raise RuntimeError(f"milvus: index not fully built: {d}")
        sidecars = sorted(p.name for p in self.path.rglob("*.hnsw.idx"))
        if not sidecars:
            raise RuntimeError("milvus: no HNSW index file after load_collection")
        return {"index": f"HNSW (FAISS IndexHNSWFlat inside milvus-lite, {self.metric})",
                "describe_index": {k: d[k] for k in ("index_type", "metric_type",
                                                     "total_rows", "indexed_rows", "state")},
                "segment_indexes": sidecars}

    def configure(self, ef: int, k: int) -> dict:
        self.search_params = {"metric_type": self.metric, "params": {"ef": ef}}
        return {"ef": ef, "metric_type": self.metric}

    def search_one(self, q: np.ndarray, k: int):
        hits = self.client.search(COLLECTION, data=[q], limit=k, anns_field="vec",
                                  search_params=self.search_params, output_fields=["id"])
        return [h["id"] for h in hits[0]]

    def search_batch(self, queries: np.ndarray, k: int) -> np.ndarray:
        hits = self.client.search(COLLECTION, data=list(queries), limit=k, anns_field="vec",
                                  search_params=self.search_params, output_fields=["id"])
        return pad_ids([[h["id"] for h in r] for r in hits], k)

    def close(self) -> None:
        self.client.close()
