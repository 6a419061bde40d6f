"""FAISS over L2-normalised item vectors: inner product = cosine.

R2END-Hybrid bundles (:mod:`index.hybrid`) index their vectors as they are (``normalise_items``
False): their inner product is the score itself, and normalising would change every ranking.

Exact search (``IndexFlatIP``) by default; HNSW is selectable for large catalogues
(its recall against exact search is measured by ``r2end index recall``). Items are
addressed by catalogue row ids through ``IndexIDMap2`` so single items can be added,
replaced or removed at run time (live items in the service).
"""

from __future__ import annotations

from pathlib import Path

import faiss
import numpy as np

INDEX_KINDS = ("flat", "hnsw")


def normalise(vectors: np.ndarray) -> np.ndarray:
    """Row-wise L2 normalisation, float32, contiguous."""
    vectors = np.ascontiguousarray(vectors, dtype=np.float32)
    norms = np.linalg.norm(vectors, axis=1, keepdims=True)
    return vectors / np.maximum(norms, 1e-12)


class ItemIndex:
    """A FAISS inner-product index keyed by integer item rows."""

    def __init__(self, index: faiss.Index, kind: str, normalise_items: bool = True):
        self.index = index
        self.kind = kind
        self.normalise_items = normalise_items
        """Whether item vectors are L2-normalised on the way in (build and upsert)."""

    @classmethod
    def build(
        cls, vectors: np.ndarray, kind: str = "flat", hnsw_m: int = 32, ef_search: int = 128, normalise_items: bool = True
    ) -> ItemIndex:
        """Index ``vectors`` (rows = catalogue rows), normalised first unless ``normalise_items`` is False."""
        vectors = normalise(vectors) if normalise_items else np.ascontiguousarray(vectors, dtype=np.float32)
        dim = vectors.shape[1]
        base: faiss.Index
        if kind == "flat":
            base = faiss.IndexFlatIP(dim)
        elif kind == "hnsw":
            hnsw = faiss.IndexHNSWFlat(dim, hnsw_m, faiss.METRIC_INNER_PRODUCT)
            hnsw.hnsw.efSearch = ef_search
            base = hnsw
        else:
            raise ValueError(f"unknown index kind {kind!r}; choose one of {INDEX_KINDS}")
        index = faiss.IndexIDMap2(base)
        index.add_with_ids(vectors, np.arange(len(vectors), dtype=np.int64))
        return cls(index, kind, normalise_items)

    @property
    def dim(self) -> int:
        return self.index.d

    @property
    def size(self) -> int:
        return self.index.ntotal

    def search(self, queries: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
        """Top-``k`` ``(scores, rows)`` per query; rows are -1 where fewer than ``k`` exist.

        ``queries`` must already be L2-normalised (the bundle's user graph ends with a
        normalisation), so scores are cosines; normalising again would only copy them.
        (R2END-Hybrid: queries and items are not unit vectors, and scores are inner products.)
        """
        k = max(1, min(k, self.size))
        return self.index.search(np.ascontiguousarray(queries, dtype=np.float32), k)

    def upsert(self, row: int, vector: np.ndarray) -> None:
        """Add or replace one item vector (exact index only; HNSW cannot remove)."""
        if self.kind != "flat":
            raise NotImplementedError("live updates need the exact (flat) index")
        ids = np.array([row], dtype=np.int64)
        self.index.remove_ids(ids)  # type: ignore[arg-type]  # faiss' Python wrapper takes an id array; its stubs know only IDSelector
        vectors = vector.reshape(1, -1)
        self.index.add_with_ids(
            normalise(vectors) if self.normalise_items else np.ascontiguousarray(vectors, dtype=np.float32), ids
        )

    def remove(self, row: int) -> bool:
        """Remove one item; True if it was there."""
        if self.kind != "flat":
            raise NotImplementedError("live updates need the exact (flat) index")
        return bool(self.index.remove_ids(np.array([row], dtype=np.int64)))  # type: ignore[arg-type]  # an id array, as in upsert()

    def save(self, path: Path) -> None:
        """Write the index file."""
        faiss.write_index(self.index, str(path))

    @classmethod
    def load(cls, path: Path, kind: str, normalise_items: bool = True) -> ItemIndex:
        """Read an index file written by :meth:`save` (``normalise_items`` as it was built)."""
        return cls(faiss.read_index(str(path)), kind, normalise_items)


def recall_at_k(approx: ItemIndex, exact: ItemIndex, queries: np.ndarray, k: int = 10) -> float:
    """Mean share of the exact top-k that the approximate index also returns (``queries`` normalised here)."""
    queries = normalise(queries)
    _, exact_rows = exact.search(queries, k)
    _, approx_rows = approx.search(queries, k)
    hits = [len(set(a) & set(e)) / k for a, e in zip(approx_rows.tolist(), exact_rows.tolist(), strict=True)]
    return float(np.mean(hits))
