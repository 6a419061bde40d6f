"""The one evaluator: leave-one-out, full ranking over every item, any model that scores histories.

A model plugs in by implementing :class:`Scorer`: given users' histories (item
rows with timestamps) it returns a score for every item. Items already in the
input history are masked by default (``mask_history``), and every report says so;
the target itself is never masked, even if it also occurs in the history. Non-finite
scores are handled by :mod:`training.evaluation.metrics` (never a hit); a row of
NaN only is an error.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Protocol

import numpy as np

from training.data.preprocess import PreparedDataset
from training.evaluation.metrics import expected_hit, expected_ndcg, greater_and_ties

History = list[tuple[int, int]]
CUTOFFS = (5, 10)


class Scorer(Protocol):
    """Anything that maps histories to scores over all items."""

    name: str

    def score(self, ds: PreparedDataset, users: Sequence[int], histories: Sequence[History]) -> np.ndarray:
        """``(len(users), ds.n_items)`` float scores; higher is better."""
        ...


@dataclass
class EvalResult:
    """Aggregate metrics plus per-user values (kept for paired bootstrap tests)."""

    stage: str
    metrics: dict[str, float]
    n_users: int
    mask_history: bool
    users: list[int] = field(default_factory=list)
    per_user: dict[str, list[float]] = field(default_factory=dict)
    top10: list[list[int]] = field(default_factory=list)
    """With ``keep_top10``: each user's recommended top 10 (item rows, ascending; masked items left out)."""


def tail_items(ds: PreparedDataset, head_share: float = 0.2) -> np.ndarray:
    """Boolean mask of long-tail items: all but the ``head_share`` most popular (training counts)."""
    popularity = np.asarray(ds.item_popularity("train"))
    order = np.argsort(-popularity, kind="stable")
    n_head = round(head_share * ds.n_items)
    tail = np.ones(ds.n_items, dtype=bool)
    tail[order[:n_head]] = False
    return tail


def evaluate(
    model: Scorer,
    ds: PreparedDataset,
    stage: str = "test",
    mask_history: bool = True,
    batch_size: int = 256,
    users: Sequence[int] | None = None,
    keep_per_user: bool = True,
    keep_top10: bool = False,
) -> EvalResult:
    """HR@5/10, NDCG@5/10, long-tail HR/NDCG@10 and coverage@10 over ``users`` (default: all); with
    ``keep_top10``, each user's top 10 too (to compare two models' lists)."""
    users = list(range(ds.n_users)) if users is None else list(users)
    hits = {k: [] for k in CUTOFFS}
    ndcgs = {k: [] for k in CUTOFFS}
    targets_all: list[int] = []
    top_lists: list[list[int]] = []
    recommended = np.zeros(ds.n_items, dtype=bool)
    for start in range(0, len(users), batch_size):
        batch = users[start : start + batch_size]
        examples = [ds.example(u, stage) for u in batch]
        histories = [h for h, _ in examples]
        targets = np.array([t for _, t in examples])
        scores = np.asarray(model.score(ds, batch, histories), dtype=np.float64)
        if scores.shape != (len(batch), ds.n_items):
            raise ValueError(f"{model.name} returned scores of shape {scores.shape}, expected {(len(batch), ds.n_items)}")
        empty = np.isnan(scores).all(axis=1)
        if empty.any():
            first = batch[int(np.flatnonzero(empty)[0])]
            raise ValueError(
                f"{model.name} returned only NaN scores for {int(empty.sum())} of {len(batch)} users "
                f"(first: user {ds.users[first]!r}, stage {stage}); a model that scores nothing is broken, not evaluated"
            )
        if mask_history:
            for row, history in enumerate(histories):
                seen = [item for item, _ in history if item != targets[row]]
                scores[row, seen] = -np.inf
        greater, ties = greater_and_ties(scores, targets)
        for k in CUTOFFS:
            hits[k].append(expected_hit(greater, ties, k))
            ndcgs[k].append(expected_ndcg(greater, ties, k))
        if ds.n_items > 10:
            top10 = np.argpartition(-scores, 10, axis=1)[:, :10]
        else:  # argpartition needs kth < n_items; with 10 items or fewer every item is in the top 10
            top10 = np.tile(np.arange(ds.n_items), (len(batch), 1))
        shown = np.take_along_axis(scores, top10, axis=1) > -np.inf  # a masked item is never recommended
        recommended[top10[shown]] = True
        if keep_top10:
            top_lists.extend(sorted(row[keep].tolist()) for row, keep in zip(top10, shown, strict=True))
        targets_all.extend(targets.tolist())
    per_user = {f"HR@{k}": np.concatenate(hits[k]) for k in CUTOFFS}
    per_user.update({f"NDCG@{k}": np.concatenate(ndcgs[k]) for k in CUTOFFS})
    metrics = {name: float(values.mean()) for name, values in per_user.items()}
    tail = tail_items(ds)[np.asarray(targets_all)]
    metrics["tail_users"] = int(tail.sum())
    metrics["tail_HR@10"] = float(per_user["HR@10"][tail].mean()) if tail.any() else float("nan")
    metrics["tail_NDCG@10"] = float(per_user["NDCG@10"][tail].mean()) if tail.any() else float("nan")
    metrics["coverage@10"] = float(recommended.mean())
    return EvalResult(
        stage=stage,
        metrics=metrics,
        n_users=len(users),
        mask_history=mask_history,
        users=users if keep_per_user else [],
        per_user={k: [round(float(x), 5) for x in v] for k, v in per_user.items() if k in ("HR@10", "NDCG@10")}
        if keep_per_user
        else {},
        top10=top_lists,
    )
