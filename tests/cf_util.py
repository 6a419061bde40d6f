"""Helpers for tests of R2END+CF bundles."""

from __future__ import annotations

from typing import Any


def enlarge_collaborative_term(cf: Any, std: float = 0.05) -> None:
    """Re-initialise a trained R2END+CF head's collaborative weights large (in place), so that a scorer or a
    service that ignored the term would visibly disagree with the model (a 2-epoch tiny head barely moves)."""
    import torch

    with torch.no_grad():
        if cf.head.tower is not None:
            torch.nn.init.normal_(cf.head.tower.out.weight, std=std)
        if cf.head.history is not None:
            cf.head.history.normal_(std=std)
            cf.history_table = cf.head.history.numpy().copy()
