"""A loaded bundle ready to serve: the user/item ONNX encoders, the FAISS index and the live catalogue.

The request path is split so the batcher can run the expensive part for many users at once:
:meth:`ServingModel.history_text` (verbalise, cheap) -> ``user_encoder`` (a
:class:`~index.onnx_encoder.TextEncoder`, batched in the encode thread) -> :meth:`add_history`
-> :meth:`search`. FAISS must not search while items are
added or removed, so searches and mutations take the same lock (searches are short).

An R2END-Hybrid bundle (manifest section ``hybrid``) adds SASRec's graph: :meth:`add_history`
turns the text vectors z_u into hybrid user vectors, :meth:`embed_items` gives live items the
new-item form (:mod:`index.hybrid`), and scores are inner products rather than cosines.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from index import bundle as B
from index.catalog import Catalog, ItemMeta
from index.faiss_index import ItemIndex
from index.hybrid import HybridUsers
from index.onnx_encoder import OnnxTextEncoder
from index.verbalize import HistoryEvent, item_document
from service.live_catalog import LiveCatalog
from service.settings import ServiceSettings
from service.user_cache import UserVectorCache

log = logging.getLogger(__name__)
UNIT_NORM_TOLERANCE = 1e-3


@dataclass(frozen=True, slots=True)
class Hit:
    """One recommended item and its score: the cosine of user and item vectors, or for R2END-Hybrid
    bundles their inner product (the user's SASRec score spread times the standardised sum)."""

    item: ItemMeta
    score: float


class ServingModel:
    """Everything one bundle needs to answer requests; build with :meth:`load`."""

    def __init__(
        self,
        path: Path,
        manifest: B.Manifest,
        user_encoder: OnnxTextEncoder,
        item_encoder: OnnxTextEncoder,
        index: ItemIndex,
        catalog: Catalog,
        int8: bool,
        history_table: Any = None,
        user_cache_size: int = 0,
        hybrid: HybridUsers | None = None,
    ):
        self.path = path
        self.manifest = manifest
        self.user_encoder = user_encoder
        self.item_encoder = item_encoder
        self.index = index
        self.catalog = LiveCatalog(catalog)
        self.int8 = int8
        self.history_table = history_table
        self.hybrid = hybrid
        self.user_cache = UserVectorCache(user_cache_size) if user_cache_size else None
        """Text vectors z_u by history text (before any history tower); None when R2END_USER_CACHE_SIZE is 0."""
        self._lock = threading.Lock()
        self.loaded_at = time.time()

    # ---- loading -------------------------------------------------------------------------------
    @classmethod
    def load(cls, path: Path, settings: ServiceSettings) -> ServingModel:
        """Validate and load the bundle at ``path``; raise :class:`BundleError` if it cannot be served."""
        path = Path(path)
        manifest = B.load_manifest(path, verify_checksums=settings.verify_checksums)
        user_file = B.USER_ONNX_INT8 if settings.use_int8 else B.USER_ONNX
        if user_file not in manifest.files:
            raise B.BundleError(f"{path / user_file}: not in this bundle (R2END_USE_INT8={settings.use_int8})")
        try:
            catalog = Catalog.load_jsonl(path / B.CATALOG)
        except ValueError as exc:
            raise B.BundleError(str(exc)) from exc
        if len(catalog) != manifest.n_items:
            raise B.BundleError(f"{path / B.CATALOG}: {len(catalog)} items, manifest says {manifest.n_items}")
        try:
            index = ItemIndex.load(path / B.ITEM_INDEX, manifest.index_kind, manifest.normalised_items)
        except RuntimeError as exc:
            raise B.BundleError(f"{path / B.ITEM_INDEX}: unreadable FAISS index ({exc})") from exc
        if index.size != manifest.n_items or index.dim != manifest.index_dim:
            raise B.BundleError(
                f"{path / B.ITEM_INDEX}: {index.size} vectors of dim {index.dim}, manifest says {manifest.n_items} x {manifest.index_dim}"
            )
        user = _encoder(path / user_file, path / B.TOKENIZER, manifest, settings.run_threads, settings.alone_threads)
        item = _encoder(path / B.ITEM_ONNX, path / B.TOKENIZER, manifest, settings.alone_threads)
        history = None
        if manifest.history_tower is not None:
            history = _history_tower(path / manifest.history_tower.file, manifest.history_tower, settings.run_threads)
        hybrid = HybridUsers(path, manifest, settings.run_threads) if manifest.hybrid is not None else None
        return cls(path, manifest, user, item, index, catalog, settings.use_int8, history, settings.user_cache_size, hybrid)

    # ---- user side ---------------------------------------------------------------------------
    def get(self, item_id: str) -> ItemMeta | None:
        return self.catalog.get(item_id)

    def history_text(self, events: Sequence[HistoryEvent], items: dict[str, ItemMeta]) -> str:
        """H_u with the bundle's verbaliser (the one training used, written by export)."""
        return self.manifest.verbaliser.history_text(events, items.__getitem__)

    def add_history(self, vectors: np.ndarray, history_rows: Sequence[Sequence[int]]) -> np.ndarray:
        """R2END+CF: z_u = norm(z_text + collaborative term of the history); unchanged for the paper's R2END.

        ``mean`` towers average a table's rows over the last items; ``sequence`` towers run their
        ONNX graph on the last items' rows. Items added live (rows beyond the trained catalogue)
        have no collaborative term, exactly like held-out items in training.

        R2END-Hybrid: the hybrid user vector from z_u and SASRec's h_u over the last ``max_len``
        trained rows (held-out and live items are left out of its input, as in training).
        """
        if self.hybrid is not None:
            return self.hybrid.users(vectors, history_rows)
        if self.history_table is None:
            return vectors
        tower = self.manifest.history_tower
        assert tower is not None
        out = vectors.astype(np.float32, copy=True)
        read = [[rows[p] for p in self._tower_positions(rows)] for rows in history_rows]
        if tower.kind == "sequence":
            width = tower.max_items  # always the full length: positions count from the left edge, as in training
            batch = np.zeros((len(read), width), dtype=np.int64)
            for i, rows in enumerate(read):
                if rows:
                    batch[i, width - len(rows) :] = np.asarray(rows) + 1
            out += self.history_table.run(None, {"history": batch})[0]
        else:
            for i, recent in enumerate(read):
                known_rows = [r for r in recent if r < len(self.history_table)]
                if recent and known_rows:
                    out[i] += self.history_table[known_rows].sum(axis=0) / len(recent)
        return out / np.maximum(np.linalg.norm(out, axis=1, keepdims=True), 1e-12)

    def _tower_positions(self, rows: Sequence[int]) -> list[int] | range:
        """Which of a history's rows (oldest first) the R2END+CF tower reads: the last ``max_items``
        (``sequence``: of those in the trained catalogue, the others are left out); R2END-Hybrid's
        SASRec: the last ``max_len`` trained rows."""
        if self.hybrid is not None:
            return self.hybrid.positions(rows)
        tower = self.manifest.history_tower
        if self.history_table is None or tower is None:
            return []
        if tower.kind == "sequence":
            trained = tower.trained_items or self.manifest.n_items
            return [p for p, row in enumerate(rows) if row < trained][-tower.max_items :]
        return range(max(0, len(rows) - tower.max_items), len(rows))

    def events_read(self, events: Sequence[HistoryEvent], rows: Sequence[int]) -> int:
        """How many of the most recent ``events`` (chronological, deduplicated) the model reads.

        The history text shows the verbaliser's selection; an R2END+CF tower or R2END-Hybrid's SASRec
        reads its own window of ``rows`` (the events' catalogue rows). Older events change nothing
        but ``exclude_seen``.
        """
        shown = len(self.manifest.verbaliser.select(events))
        positions = self._tower_positions(rows)
        return max(shown, len(rows) - positions[0]) if len(positions) else shown

    # ---- search --------------------------------------------------------------------------------
    def search(self, vectors: np.ndarray, ks: Sequence[int], exclude: Sequence[frozenset[str]]) -> list[list[Hit]]:
        """Top ``ks[i]`` items for ``vectors[i]``, leaving out ``exclude[i]``."""
        fetch = max(k + len(skip) for k, skip in zip(ks, exclude, strict=True))
        with self._lock:
            scores, rows = self.index.search(vectors, fetch)
            results = []
            for k, skip, row_scores, row_ids in zip(ks, exclude, scores.tolist(), rows.tolist(), strict=True):
                hits = []
                for score, row in zip(row_scores, row_ids, strict=True):
                    item = self.catalog.at(row) if row >= 0 else None
                    if item is None or item.item_id in skip:
                        continue
                    hits.append(Hit(item, float(score)))
                    if len(hits) == k:
                        break
                results.append(hits)
        return results

    # ---- live items ----------------------------------------------------------------------------
    @property
    def supports_live_items(self) -> bool:
        return self.index.kind == "flat"

    def embed_items(self, items: Sequence[ItemMeta]) -> np.ndarray:
        """z_i for items: ``item_document(description, meta)`` through the item ONNX graph.

        R2END-Hybrid: the new-item form ``[A z_i + a ; z_i ; 1]``, except for an item that replaces
        one SASRec learned (same id, so same row): it keeps its SASRec row, ``[E_i ; z_i ; 0]``.
        """
        text = self.item_encoder.encode([item_document(item.description, item) for item in items])
        if self.hybrid is None:
            return text
        return self.hybrid.items(text, [self.catalog.row(item.item_id) for item in items])

    def upsert(self, item: ItemMeta, vector: np.ndarray) -> bool:
        """Put an item into the index and catalogue at once; True if it is new."""
        with self._lock:
            self.index.upsert(self.catalog.row_for(item.item_id), vector)
            _, created = self.catalog.put(item)
        return created

    def remove(self, item_id: str) -> bool:
        """Take an item out of the index and catalogue; False if it was unknown."""
        with self._lock:
            row = self.catalog.row(item_id)
            if row is None:
                return False
            self.index.remove(row)
            self.catalog.remove(item_id)
        return True

    @property
    def n_items(self) -> int:
        return len(self.catalog)

    # ---- warm-up -----------------------------------------------------------------------------
    def warmup_texts(self) -> list[str]:
        """Histories of 1, a few and ``max_items`` catalogue items (real lengths), dated."""
        items = list(self.catalog)[: max(1, self.manifest.verbaliser.max_items)]
        lookup = {item.item_id: item for item in items}
        texts = []
        for n in sorted({1, min(3, len(items)), len(items)}):
            events = [HistoryEvent(item.item_id, 1_000_000_000 + 86_400 * i) for i, item in enumerate(items[:n])]
            texts.append(self.history_text(events, lookup))
        return texts

    def warmup(self, batch_sizes: Sequence[int] = (1, 4)) -> float:
        """A few encodes at several lengths and batch sizes, one item encode and one search; returns seconds."""
        started = time.perf_counter()
        texts = self.warmup_texts()
        for text in texts:
            for batch in batch_sizes:
                vectors = self.user_encoder.encode([text] * batch)
        rows = list(range(min(self.manifest.n_items, 3)))
        self.search(self.add_history(vectors[:1], [rows]), [10], [frozenset()])
        self.embed_items(list(self.catalog)[:1])
        return time.perf_counter() - started


def _history_tower(path: Path, tower: B.HistoryTower, threads: int) -> Any:
    """The table (mean tower) or the ONNX session (sequence tower) of an R2END+CF bundle."""
    if tower.kind == "mean":
        return np.load(path)
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    try:
        return ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
    except Exception as exc:  # onnxruntime raises its own types for unreadable files
        raise B.BundleError(f"{path}: cannot be loaded ({type(exc).__name__}: {str(exc)[:300]})") from exc


def _encoder(
    onnx_path: Path, tokenizer_path: Path, manifest: B.Manifest, threads: int, alone_threads: int | None = None
) -> OnnxTextEncoder:
    try:
        encoder = OnnxTextEncoder(
            onnx_path, tokenizer_path, manifest.max_seq_length, threads=threads, alone_threads=alone_threads
        )
    except Exception as exc:  # onnxruntime / tokenizers raise their own types for unreadable files
        raise B.BundleError(f"{onnx_path}: cannot be loaded ({type(exc).__name__}: {str(exc)[:300]})") from exc
    if encoder.output_dim != manifest.output_dim:
        raise B.BundleError(f"{onnx_path}: outputs dim {encoder.output_dim}, manifest says {manifest.output_dim}")
    norm = float(np.linalg.norm(encoder.encode(["unit-norm check"])[0]))
    if abs(norm - 1.0) > UNIT_NORM_TOLERANCE:  # the index ranks by inner product and does not normalise queries
        raise B.BundleError(f"{onnx_path}: outputs vectors of norm {norm:.4f}; the graph must end with an L2 normalisation")
    return encoder
