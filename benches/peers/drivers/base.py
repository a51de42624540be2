"""The interface every peer driver implements, plus small /proc helpers shared by them."""
from __future__ import annotations

import importlib.metadata
import os
from pathlib import Path
from typing import Any, Sequence

import numpy as np


class Driver:
    """One peer engine. peers.py calls, in this order and in a fresh process per engine:

    setup() (imports) -> open(...) (start the engine / create an empty collection; not
    timed; its memory is reported as engine overhead) -> [memory baseline] -> build(...)
    (timed: load every vector AND build the index until it is searchable through the
    index) -> verify() -> for each ef: configure(ef), search_one / search_batch ... -> close().

    search_one must be safe to call from several threads at once after configure(ef);
    configure is never called while searches run.
    """

    name = ""
    package = ""  # distribution whose version is recorded in each row
    on_disk = False  # has a data directory whose size is reported as disk_bytes_per_vector
    batch = False  # search_batch is implemented

    def __init__(self, workdir: Path, opts: Any):
        self.workdir = workdir  # private temp dir, removed by the harness afterwards
        self.opts = opts  # the parsed `run` options (engine-specific --lancedb-* etc.)

    @property
    def version(self) -> str:
        return importlib.metadata.version(self.package)

    def setup(self) -> None:
        """Import the library (its import-time memory is not counted as index memory)."""

    def open(self, dim: int, m: int, ef_construction: int, threads: int) -> None:
        """Start the engine and create its empty table / collection / shard (no vectors)."""

    def build(self, base: np.ndarray, m: int, ef_construction: int, threads: int) -> None:
        raise NotImplementedError

    def verify(self, queries: np.ndarray, k: int) -> dict[str, Any]:
        """Check (raise if not) that the index is built and used; return a description."""
        return {}

    def configure(self, ef: int, k: int) -> dict[str, Any]:
        """Set the search breadth for the following calls; return the actual parameters."""
        raise NotImplementedError

    def search_one(self, q: np.ndarray, k: int) -> Sequence[int]:
        """Ids of the k nearest neighbours of one query (a 1-D float32 array), one call."""
        raise NotImplementedError

    def search_batch(self, queries: np.ndarray, k: int) -> np.ndarray:
        """(nq, k) ids for all queries in one call (only if `batch`)."""
        raise NotImplementedError

    def close(self) -> None:
        pass


def proc_status(pid: int | str = "self") -> dict[str, int]:
    """The kB fields of /proc/PID/status, in bytes (VmRSS, VmHWM, RssAnon, RssFile, ...)."""
    out: dict[str, int] = {}
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            key, _, value = line.partition(":")
            parts = value.split()
            if len(parts) == 2 and parts[1] == "kB":
                out[key] = int(parts[0]) * 1024
    return out


def mapped_rss(under: Path) -> int:
    """RSS bytes of this process's file mappings whose path is inside `under` (an engine's
    mmapped data files), from /proc/self/smaps."""
    prefix, total, inside = str(under.resolve()), 0, False
    with open("/proc/self/smaps") as f:
        for line in f:
            first = line.split(None, 1)[0]
            if "-" in first and not first.endswith(":"):  # a mapping header line
                parts = line.split(None, 5)
                inside = len(parts) == 6 and parts[5].strip().startswith(prefix)
            elif inside and first == "Rss:":
                total += int(line.split()[1]) * 1024
    return total


def descendants(pid: int | None = None) -> list[int]:
    """Pids of all live descendants of `pid` (default: this process), found via /proc."""
    root = os.getpid() if pid is None else pid
    children: dict[int, list[int]] = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat") as f:
                stat = f.read()
        except OSError:
            continue
        ppid = int(stat[stat.rindex(")") + 2:].split()[1])  # fields after "(comm)": state ppid
        children.setdefault(ppid, []).append(int(entry))
    found, todo = [], [root]
    while todo:
        for c in children.get(todo.pop(), []):
            found.append(c)
            todo.append(c)
    return found


def descendants_rss() -> tuple[int, int]:
    """(summed VmRSS bytes, count) of this process's live descendant processes."""
    total = count = 0
    for pid in descendants():
        try:
            total += proc_status(pid).get("VmRSS", 0)
            count += 1
        except OSError:
            pass
    return total, count


def dir_bytes(path: Path) -> int:
    """Allocated bytes (st_blocks * 512) under path: sparse / preallocated files count as
    what they really occupy, not their apparent size."""
    total = 0
    for root, _dirs, files in os.walk(path):
        for name in files:
            try:
                total += os.lstat(os.path.join(root, name)).st_blocks * 512
            except OSError:
                pass
    return total


def pad_ids(rows: Sequence[Sequence[int]], k: int) -> np.ndarray:
    """(len(rows), k) int64 array of ids, short rows padded with -1."""
    out = np.full((len(rows), k), -1, dtype=np.int64)
    for i, r in enumerate(rows):
        r = list(r)[:k]
        out[i, :len(r)] = r
    return out


def graph_check(approx, exact, queries: np.ndarray, k: int) -> dict[str, int]:
    """Evidence that searches go through the ANN index and not a plain scan: how many of
    (up to) 20 queries get a different top-k at the smallest breadth than from the engine's
    own exact search. A scan would give the exact answer every time."""
    probe = queries[:20]
    differ = sum(set(approx(q)) != set(exact(q)) for q in probe)
    return {"queries": len(probe), "differ_from_exact_at_ef_k": int(differ)}
