"""Cold-start protocol: a seeded 10% of items is held out of every training stage.

:func:`training_view` removes every interaction with a held-out ("cold") item from
the part of the data models learn from, so teacher prompts built from it never
mention a cold item (their cache keys then differ, and such outputs are simply not
found), distillation and projection never see one, and validation users with a
cold validation target are dropped. Models are then evaluated on the *original*
test split, where cold items are recommendable: R2END embeds them from metadata
with the item ONNX graph, exactly as the service does for ``PUT /items``.
"""

from __future__ import annotations

import numpy as np

from training.data.preprocess import PreparedDataset
from training.evaluation.evaluator import EvalResult


def pick_cold_items(ds: PreparedDataset, share: float = 0.1, seed: int = 22) -> np.ndarray:
    """Boolean mask over item rows: a uniform random ``share`` of the catalogue."""
    rng = np.random.default_rng(seed)
    n_cold = round(share * ds.n_items)
    cold = np.zeros(ds.n_items, dtype=bool)
    cold[rng.choice(ds.n_items, size=n_cold, replace=False)] = True
    return cold


def training_view(ds: PreparedDataset, cold: np.ndarray) -> PreparedDataset:
    """The data a model may learn from: cold items' events removed from training parts.

    Each user keeps the validation and test events at the end (never trained on);
    users left with fewer than two training events, or whose validation target is
    cold, are dropped from the view (they are still evaluated on test).
    """
    users, sequences = [], []
    for user, seq in zip(ds.users, ds.sequences, strict=True):
        train = [event for event in seq[:-2] if not cold[event[0]]]
        if len(train) < 2 or cold[seq[-2][0]]:
            continue
        users.append(user)
        sequences.append(train + seq[-2:])
    view = PreparedDataset(ds.name, ds.catalog, users, sequences, ds.reviews, dict(ds.report))
    view.report["cold-start view: users kept"] = len(users)
    view.report["cold-start view: cold items"] = int(cold.sum())
    return view


def split_by_target(ds: PreparedDataset, cold: np.ndarray) -> tuple[list[int], list[int]]:
    """Test users whose target is cold, and the others."""
    cold_users, warm_users = [], []
    for u in range(ds.n_users):
        (cold_users if cold[ds.example(u, "test")[1]] else warm_users).append(u)
    return cold_users, warm_users


def subset(result: EvalResult, users: list[int]) -> dict[str, float]:
    """HR@10/NDCG@10 of an evaluation restricted to ``users`` (from its per-user values)."""
    index = {u: i for i, u in enumerate(result.users)}
    rows = [index[u] for u in users]
    out = {"users": len(rows)}
    for metric in ("HR@10", "NDCG@10"):
        values = np.asarray(result.per_user[metric])[rows]
        out[metric] = float(values.mean()) if len(values) else float("nan")
    return out
