"""FAISS IndexHNSWFlat, METRIC_INNER_PRODUCT on unit vectors (= cosine)."""
from __future__ import annotations

import numpy as np

from .base import Driver


class FaissDriver(Driver):
    name = "faiss"
    package = "faiss-cpu"
    batch = True

    def setup(self) -> None:
        import faiss

        self.faiss = faiss

    def build(self, base: np.ndarray, m: int, ef_construction: int, threads: int) -> None:
        faiss = self.faiss
        faiss.omp_set_num_threads(threads)
        index = faiss.IndexHNSWFlat(base.shape[1], m, faiss.METRIC_INNER_PRODUCT)
        index.hnsw.efConstruction = ef_construction
        index.add(base)
        faiss.omp_set_num_threads(1)  # search single-threaded (batch calls too)
        self.index = index

    def verify(self, queries: np.ndarray, k: int) -> dict:
        assert self.index.ntotal > 0
        return {"index": "IndexHNSWFlat (METRIC_INNER_PRODUCT)",
                "ef_construction": self.index.hnsw.efConstruction,
                "max_level": int(self.index.hnsw.max_level), "elements": int(self.index.ntotal)}

    def configure(self, ef: int, k: int) -> dict:
        self.index.hnsw.efSearch = ef
        return {"efSearch": ef}  # used as given: efSearch < k does lower recall

    def search_one(self, q: np.ndarray, k: int):
        _, labels = self.index.search(q.reshape(1, -1), k)
        return labels[0]

    def search_batch(self, queries: np.ndarray, k: int) -> np.ndarray:
        _, labels = self.index.search(queries, k)
        return labels
