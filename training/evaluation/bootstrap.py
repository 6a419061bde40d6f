"""Paired bootstrap confidence intervals for the difference of two models on the same users."""

from __future__ import annotations

import numpy as np


def paired_bootstrap(
    a: np.ndarray, b: np.ndarray, n_resamples: int = 2000, seed: int = 22, level: float = 0.95
) -> dict[str, float]:
    """Mean of ``a - b`` over users and its percentile bootstrap interval (users resampled with replacement).

    ``significant`` is True when the interval excludes 0: the difference is larger than
    what resampling the same number of test users produces by chance.
    """
    a, b = np.asarray(a, dtype=np.float64), np.asarray(b, dtype=np.float64)
    if a.shape != b.shape or a.ndim != 1 or len(a) == 0:
        raise ValueError(f"need two equal-length 1-D arrays, got {a.shape} and {b.shape}")
    diff = a - b
    rng = np.random.default_rng(seed)
    means = diff[rng.integers(0, len(diff), size=(n_resamples, len(diff)))].mean(axis=1)
    low, high = np.quantile(means, [(1 - level) / 2, 1 - (1 - level) / 2])
    base = b.mean()
    return {
        "mean_a": float(a.mean()),
        "mean_b": float(base),
        "diff": float(diff.mean()),
        "ci_low": float(low),
        "ci_high": float(high),
        "ratio": float(a.mean() / base) if base else float("nan"),
        "significant": bool(low > 0 or high < 0),
        "users": len(diff),
    }
