"""Mean-pooled frozen-encoder embeddings of the history items (the paper's ablation 4)."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from index.verbalize import Verbaliser, item_text
from training.data.preprocess import PreparedDataset
from training.encoders import DEFAULT_ENCODER, encode_cached


class MeanPool:
    """User vector = mean of the item-text embeddings of the history the verbaliser would show."""

    def __init__(self, encoder: str = DEFAULT_ENCODER, max_items: int | None = None, verbaliser: Verbaliser | None = None):
        self.encoder = encoder
        verbaliser = verbaliser or Verbaliser()
        self.verbaliser = verbaliser if max_items is None else verbaliser.model_copy(update={"max_items": max_items})
        self.name = f"meanpool-{self.verbaliser.max_items}"
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
            chosen = self.verbaliser.select(ds.history_events(history))
            rows = [ds.catalog.row(e.item_id) for e in chosen]
            if rows:
                vector = items[rows].mean(axis=0)
                users_matrix[row] = vector / (np.linalg.norm(vector) + 1e-12)
        return users_matrix @ items.T
