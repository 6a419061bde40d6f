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

import numpy as np
from pydantic import ValidationError

from index import bundle as B
from index.catalog import Catalog, ItemMeta
from index.faiss_index import ItemIndex
from index.history_tower import HistoryTerm
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
        history: HistoryTerm | None = None,
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
        self.history = history
        """R2END+CF's collaborative term (:mod:`index.history_tower`); None for other bundles."""
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
        if settings.use_int8:
            report_int8_cost(manifest, path)
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
        history = HistoryTerm(path, manifest, settings.run_threads) if manifest.history_tower is not None else None
        hybrid = HybridUsers(path, manifest, settings.run_threads) if manifest.hybrid is not None else None
        return cls(path, manifest, user, item, index, catalog, settings.use_int8, history, settings.user_cache_size, hybrid)

    # ---- user side ---------------------------------------------------------------------------
    def get(self, item_id: str) -> ItemMeta | None:
        return self.catalog.get(item_id)

    def history_text(self, events: Sequence[HistoryEvent], items: dict[str, ItemMeta]) -> str:
        """H_u with the bundle's verbaliser (the one training used, written by export)."""
        return self.manifest.verbaliser.history_text(events, items.__getitem__)

    def add_history(
        self,
        vectors: np.ndarray,
        history_rows: Sequence[Sequence[int]],
        new_item_biases: Sequence[float | None] | None = None,
    ) -> np.ndarray:
        """R2END+CF: z_u = norm(z_text + collaborative term of the history); unchanged for the paper's R2END.

        ``mean`` towers average a table's rows over the last items; ``sequence`` towers run their
        ONNX graph on the last items' rows (:class:`index.history_tower.HistoryTerm`). Items added
        live (rows beyond the trained catalogue) have no collaborative term, exactly like held-out
        items in training.

        R2END-Hybrid: the hybrid user vector from z_u and SASRec's h_u over the last ``max_len``
        trained rows (held-out and live items are left out of its input, as in training); ``new_item_biases``
        (hybrid bundles only), per user, replaces the bundle's new-item bias b (None: the bundle's).
        """
        if self.hybrid is not None:
            return self.hybrid.users(vectors, history_rows, new_item_biases)
        if self.history is None:
            return vectors
        return self.history.add(vectors, history_rows)

    def _tower_positions(self, rows: Sequence[int]) -> list[int] | range:
        """Which of a history's rows (oldest first) the R2END+CF tower reads: the last ``max_items``
        (``sequence``: of those in the trained catalogue, the others are left out); R2END-Hybrid's
        SASRec: the last ``max_len`` trained rows."""
        if self.hybrid is not None:
            return self.hybrid.positions(rows)
        if self.history is None:
            return []
        return self.history.positions(rows)

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


def report_int8_cost(manifest: B.Manifest, path: Path) -> str | None:
    """Log what the int8 user graph costs this bundle (``metrics.int8``, measured at export): a warning, also
    returned, when it loses more validation NDCG@10 than export's threshold or when the bundle does not say."""
    try:
        cost = manifest.int8_cost
    except ValidationError as exc:
        warning = (
            f"R2END_USE_INT8: {path / B.MANIFEST}: metrics.int8 is malformed ({exc.errors()[0]['msg']}); int8's cost is unknown"
        )
    else:
        if cost is not None and not cost.exceeds:
            log.info("R2END_USE_INT8: bundle %s: %s", manifest.bundle_version, cost.describe())
            return None
        if cost is None:
            warning = (
                f"R2END_USE_INT8: bundle {manifest.bundle_version} does not say what int8 costs it (exported without "
                f"the check); compare `r2end evaluate {path} --int8 --no-write` with `r2end evaluate {path} --no-write` first"
            )
        else:
            warning = (
                f"R2END_USE_INT8: the int8 user graph loses {100 * cost.relative_loss:.1f}% of bundle "
                f"{manifest.bundle_version}'s validation NDCG@10, more than the {100 * cost.max_relative_loss:.1f}% "
                f"its export allowed ({cost.describe()}); serve it in fp32 (unset R2END_USE_INT8) unless the speed is worth it"
            )
    log.warning(warning)
    return warning


def _encoder(
    onnx_path: Path, tokenizer_path: Path, manifest: B.Manifest, threads: int, alone_threads: int | None = None
) -> OnnxTextEncoder:
    try:
        encoder = OnnxTextEncoder(
            onnx_path, tokenizer_path, manifest.max_seq_length, threads=threads, alone_threads=alone_threads
        )
    except B.BundleError:
        raise
    except Exception as exc:  # tokenizers raises its own types for unreadable files
        raise B.BundleError(f"{onnx_path}: cannot be loaded ({type(exc).__name__}: {str(exc)[:300]})") from exc
    if encoder.output_dim != manifest.output_dim:
        raise B.BundleError(f"{onnx_path}: outputs dim {encoder.output_dim}, manifest says {manifest.output_dim}")
    norm = float(np.linalg.norm(encoder.encode(["unit-norm check"])[0]))
    if abs(norm - 1.0) > UNIT_NORM_TOLERANCE:  # the index ranks by inner product and does not normalise queries
        raise B.BundleError(f"{onnx_path}: outputs vectors of norm {norm:.4f}; the graph must end with an L2 normalisation")
    return encoder
