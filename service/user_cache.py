"""An optional LRU cache of user vectors, keyed by the verbalised history text.

A returning user whose recent history has not changed verbalises to the same text, so the
encode (the expensive step) can be skipped. One cache belongs to one loaded model (a reload
starts an empty one), so a vector is never reused across bundles. It lives on the event loop
only (looked up and filled by :class:`service.recommender.Recommender`), so it needs no lock;
``collections.OrderedDict`` gives the LRU order without a new dependency in the serving image.

With the int8 user graph a cached vector is the one computed in the batch it first came in;
an encode of the same text in another batch can differ slightly (cosine ~0.995), as without
the cache.
"""

from __future__ import annotations

from collections import OrderedDict

import numpy as np


class UserVectorCache:
    """At most ``size`` text -> vector entries; the least recently used goes first."""

    def __init__(self, size: int):
        if size < 1:
            raise ValueError(f"cache size {size}: at least 1 (0 means no cache: don't make one)")
        self.size = size
        self._entries: OrderedDict[str, np.ndarray] = OrderedDict()

    def __len__(self) -> int:
        return len(self._entries)

    def get(self, text: str) -> np.ndarray | None:
        """The vector for ``text`` (now the most recently used), or None."""
        vector = self._entries.get(text)
        if vector is not None:
            self._entries.move_to_end(text)
        return vector

    def put(self, text: str, vector: np.ndarray) -> None:
        """Keep ``vector`` for ``text`` (read-only, so no caller can change a cached vector)."""
        vector = np.array(vector, copy=True)
        vector.setflags(write=False)
        self._entries[text] = vector
        self._entries.move_to_end(text)
        while len(self._entries) > self.size:
            self._entries.popitem(last=False)
