"""Peer engine drivers for peers.py: one module per engine, imported only when used."""
from __future__ import annotations

import importlib

from .base import Driver

# engine name -> (module, class); order = the order of `--engines all`
ENGINES: dict[str, tuple[str, str]] = {
    "hnswlib": ("hnswlib_driver", "HnswlibDriver"),
    "faiss": ("faiss_driver", "FaissDriver"),
    "usearch": ("usearch_driver", "UsearchDriver"),
    "qdrant": ("qdrant_driver", "QdrantDriver"),
    "milvus": ("milvus_driver", "MilvusDriver"),
    "lancedb": ("lancedb_driver", "LancedbDriver"),
}


def driver_class(name: str) -> type[Driver]:
    module, cls = ENGINES[name]
    return getattr(importlib.import_module(f"{__name__}.{module}"), cls)
