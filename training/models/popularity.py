"""Most-popular items: the floor every model must clear."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from training.data.preprocess import PreparedDataset


class Popularity:
    """Scores each item by its interaction count in the data visible at ``stage``.

    For the test stage that is every interaction except the test targets; for
    validation, every interaction except the validation and test targets.
    """

    name = "pop"

    def __init__(self, stage: str = "test", source: PreparedDataset | None = None) -> None:
        self.stage = stage
        self.source = source  # count on this data instead of the evaluated one (cold-start view)
        self._counts: np.ndarray | None = None

    def score(self, ds: PreparedDataset, users: Sequence[int], histories: Sequence[list[tuple[int, int]]]) -> np.ndarray:
        """Same popularity vector for every user (history items are masked by the evaluator)."""
        if self._counts is None:
            self._counts = np.asarray((self.source or ds).item_popularity(self.stage), dtype=np.float64)
        return np.tile(self._counts, (len(users), 1))
