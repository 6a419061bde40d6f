"""R2END+CF's user-side collaborative term (manifest section ``history_tower``), without torch: shared by the
service and by offline checks of bundles (:class:`training.r2end.bundle_scorer.BundleScorer`), so that both
score a history exactly alike.

``mean`` towers average a table's rows over the last ``max_items`` history items; ``sequence`` towers run
their ONNX graph on the last ``max_items`` items' rows. Items beyond the trained catalogue (added live, or
held out) have no collaborative term, exactly like held-out items in training.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from index import bundle as B
from index.onnx_session import cpu_session


class HistoryTerm:
    """A bundle's history tower: ``add`` turns the text vectors z_u into ``norm(z_u + term(history))``."""

    def __init__(self, directory: Path, manifest: B.Manifest, threads: int = 1):
        tower = manifest.history_tower
        if tower is None:
            raise B.BundleError(f"{Path(directory) / B.MANIFEST}: not an R2END+CF bundle (no history_tower section)")
        self.tower = tower
        self.n_items = manifest.n_items
        self.table = _load(Path(directory) / tower.file, tower, threads)
        """The table (mean tower) or the ONNX session (sequence tower)."""

    def positions(self, rows: Sequence[int]) -> list[int] | range:
        """Which of a history's rows (oldest first) the tower reads: the last ``max_items`` (``sequence``: of
        those in the trained catalogue, the others are left out)."""
        tower = self.tower
        if tower.kind == "sequence":
            trained = tower.trained_items or self.n_items
            return [p for p, row in enumerate(rows) if row < trained][-tower.max_items :]
        return range(max(0, len(rows) - tower.max_items), len(rows))

    def add(self, vectors: np.ndarray, history_rows: Sequence[Sequence[int]]) -> np.ndarray:
        """``norm(z_u + term)`` per history of catalogue rows (oldest first)."""
        out = vectors.astype(np.float32, copy=True)
        read = [[rows[p] for p in self.positions(rows)] for rows in history_rows]
        if self.tower.kind == "sequence":
            width = self.tower.max_items  # always the full length: positions count from the left edge, as in training
            batch = np.zeros((len(read), width), dtype=np.int64)
            for i, rows in enumerate(read):
                if rows:
                    batch[i, width - len(rows) :] = np.asarray(rows) + 1
            out += self.table.run(None, {"history": batch})[0]
        else:
            for i, recent in enumerate(read):
                known_rows = [r for r in recent if r < len(self.table)]
                if recent and known_rows:
                    out[i] += self.table[known_rows].sum(axis=0) / len(recent)
        return out / np.maximum(np.linalg.norm(out, axis=1, keepdims=True), 1e-12)


def _load(path: Path, tower: B.HistoryTower, threads: int) -> Any:
    return np.load(path) if tower.kind == "mean" else cpu_session(path, threads)
