"""Full-ranking metrics with exact expected values under random tie-breaking.

For a user, let ``g`` be the number of items scored strictly above the target and
``t`` the number tied with it (target excluded). If ties are broken uniformly at
random, the target's 0-based position is uniform on ``g..g+t``; HR@K and NDCG@K
below are the exact expectations. A model that scores everything equal therefore
gets chance-level numbers, neither 0 nor 1.

Non-finite scores never help a model: a target scored NaN, +inf or -inf is a miss
(comparisons with NaN are all false, so without this rule a NaN target had no item
above it and counted as a hit), and any other item scored NaN counts as ranked above
the target. Rows scored NaN everywhere are refused by the evaluator (a broken model,
not a bad ranking).
"""

from __future__ import annotations

import numpy as np

BELOW_EVERY_CUTOFF = np.iinfo(np.int64).max // 4
"""``greater`` of a row that is a miss at every cut-off (a non-finite target score)."""


def greater_and_ties(scores: np.ndarray, targets: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Per row: items ranked above the target, and items tied with it (target excluded).

    A row whose target score is not finite gets ``greater = BELOW_EVERY_CUTOFF`` and no
    ties, so that every cut-off counts it as a miss.
    """
    rows = np.arange(len(targets))
    target_scores = scores[rows, targets][:, None]
    above = (scores > target_scores) | np.isnan(scores)
    above[rows, targets] = False
    greater = above.sum(axis=1)
    ties = (scores == target_scores).sum(axis=1) - 1
    invalid = ~np.isfinite(target_scores[:, 0])
    greater[invalid] = BELOW_EVERY_CUTOFF
    ties[invalid] = 0
    return greater, ties


def expected_hit(greater: np.ndarray, ties: np.ndarray, k: int) -> np.ndarray:
    """P(target in top-k) per row."""
    return np.clip((k - greater) / (ties + 1), 0.0, 1.0)


def expected_ndcg(greater: np.ndarray, ties: np.ndarray, k: int) -> np.ndarray:
    """E[1/log2(pos+2) if pos < k else 0] per row (one relevant item, so IDCG = 1)."""
    gains = 1.0 / np.log2(np.arange(k) + 2.0)
    cumulative = np.concatenate([[0.0], np.cumsum(gains)])  # cumulative[j] = sum of gains[:j]
    lo = np.clip(greater, 0, k)
    hi = np.clip(greater + ties + 1, 0, k)
    return (cumulative[hi] - cumulative[lo]) / (ties + 1)
