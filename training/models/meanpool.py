"""Mean-pooled frozen-encoder embeddings of the history items (the paper's ablation 4)."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from index.verbalize import DEFAULT_MAX_ITEMS, DEFAULT_WINDOW_DAYS, item_text, select_history
from training.data.preprocess import PreparedDataset
from training.encoders import DEFAULT_ENCODER, encode_cached


class MeanPool:
    """User vector = mean of the item-text embeddings of the history the verbaliser would show."""

    def __init__(self, encoder: str = DEFAULT_ENCODER, max_items: int = DEFAULT_MAX_ITEMS, window_days: int | None = DEFAULT_WINDOW_DAYS):
        self.encoder = encoder
        self.max_items = max_items
        self.window_days = window_days
        self.name = f"meanpool-{max_items}"
        self._items: np.ndarray | None = None

    def item_vectors(self, ds: PreparedDataset) -> np.ndarray:
        """Normalised embeddings of every item's metadata text M_i."""
        if self._items is None:
            self._items = encode_cached(self.encoder, [item_text(item) for item in ds.catalog])
        return self._items

    def score(self, ds: PreparedDataset, users: Sequence[int], histories: Sequence[list[tuple[int, int]]]) -> np.ndarray:
        """Cosine between the mean history vector and every item."""
        items = self.item_vectors(ds)
        users_matrix = np.zeros((len(histories), items.shape[1]), dtype=np.float32)
        for row, history in enumerate(histories):
            chosen = select_history(ds.history_events(history), self.max_items, self.window_days)
            rows = [ds.catalog.row(e.item_id) for e in chosen]
            if rows:
                vector = items[rows].mean(axis=0)
                users_matrix[row] = vector / (np.linalg.norm(vector) + 1e-12)
        return users_matrix @ items.T
