"""hnswlib: the reference C++ HNSW (space="ip" on unit vectors = cosine)."""
from __future__ import annotations

import numpy as np

from .base import Driver


class HnswlibDriver(Driver):
    name = "hnswlib"
    package = "hnswlib"
    batch = True

    def setup(self) -> None:
        import hnswlib

        self.hnswlib = hnswlib

    def build(self, base: np.ndarray, m: int, ef_construction: int, threads: int) -> None:
        index = self.hnswlib.Index(space="ip", dim=base.shape[1])
        index.init_index(max_elements=len(base), M=m, ef_construction=ef_construction)
        index.set_num_threads(threads)
        index.add_items(base, np.arange(len(base)), num_threads=threads)
        index.set_num_threads(1)
        self.index = index

    def verify(self, queries: np.ndarray, k: int) -> dict:
        assert self.index.get_current_count() > 0
        return {"index": "HNSW (hnswlib.Index, space=ip)", "M": self.index.M,
                "ef_construction": self.index.ef_construction,
                "elements": self.index.get_current_count()}

    def configure(self, ef: int, k: int) -> dict:
        self.index.set_ef(ef)
        return {"ef": ef}  # hnswlib searches with max(ef, k)

    def search_one(self, q: np.ndarray, k: int):
        labels, _ = self.index.knn_query(q, k=k, num_threads=1)
        return labels[0]

    def search_batch(self, queries: np.ndarray, k: int) -> np.ndarray:
        labels, _ = self.index.knn_query(queries, k=k, num_threads=1)
        return labels
