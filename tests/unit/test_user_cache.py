"""The user-vector cache (R2END_USER_CACHE_SIZE): least recently used goes first, and its vectors are read-only copies."""

from __future__ import annotations

import numpy as np
import pytest

from service.user_cache import UserVectorCache


def test_user_cache_is_lru_and_its_vectors_read_only():
    cache = UserVectorCache(2)
    cache.put("a", np.array([1.0, 0.0]))
    cache.put("b", np.array([0.0, 1.0]))
    assert cache.get("a") is not None  # "a" is now the most recently used
    cache.put("c", np.array([1.0, 1.0]))
    assert cache.get("b") is None and cache.get("a") is not None and cache.get("c") is not None and len(cache) == 2
    with pytest.raises(ValueError):
        cache.get("a")[0] = 5.0
    source = np.array([3.0, 4.0])
    cache.put("d", source)
    source[0] = 0.0  # the cache kept its own copy
    assert cache.get("d").tolist() == [3.0, 4.0]
    with pytest.raises(ValueError):
        UserVectorCache(0)
