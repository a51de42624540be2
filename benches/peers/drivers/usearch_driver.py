"""USearch (unum) HNSW: metric "ip" on unit vectors (= cosine), f32 storage."""
from __future__ import annotations

import numpy as np

from .base import Driver


class UsearchDriver(Driver):
    name = "usearch"
    package = "usearch"
    batch = True

    def setup(self) -> None:
        from usearch.index import Index

        self.Index = Index

    def build(self, base: np.ndarray, m: int, ef_construction: int, threads: int) -> None:
        # dtype is explicit: usearch's default scalar type for a metric is not always f32,
        # and every other engine here stores float32.
        self.index = self.Index(ndim=base.shape[1], metric=self.opts.usearch_metric, dtype="f32",
                                connectivity=m, expansion_add=ef_construction)
        self.index.add(np.arange(len(base), dtype=np.uint64), base, threads=threads)

    def verify(self, queries: np.ndarray, k: int) -> dict:
        ix = self.index
        assert len(ix) > 0
        return {"index": f"usearch.Index (HNSW, metric={ix.metric_kind.name}, "
                         f"dtype={ix.dtype.name})",
                "connectivity": ix.connectivity, "expansion_add": ix.expansion_add,
                "levels": ix.nlevels, "elements": len(ix)}

    def configure(self, ef: int, k: int) -> dict:
        self.index.expansion_search = ef
        return {"expansion_search": ef}

    def search_one(self, q: np.ndarray, k: int):
        return self.index.search(q, k, threads=1).keys

    def search_batch(self, queries: np.ndarray, k: int) -> np.ndarray:
        return self.index.search(queries, k, threads=1).keys
