"""The shared projection f (section 3.4), trained on frozen user and item embeddings."""

from __future__ import annotations

import copy
import logging
from collections.abc import Callable

import numpy as np
import torch
from torch import nn

from training.losses.infonce_norm import InfoNCEWithNormPenalty
from training.r2end.config import R2ENDConfig

log = logging.getLogger(__name__)


class Projection(nn.Module):
    """One linear layer shared by users and items: ``z = W e + b``."""

    def __init__(self, in_dim: int, out_dim: int):
        super().__init__()
        self.linear = nn.Linear(in_dim, out_dim)

    def forward(self, embeddings: torch.Tensor) -> torch.Tensor:
        return self.linear(embeddings)


def sample_negatives(positives: torch.Tensor, pool: torch.Tensor, n_negatives: int, generator: torch.Generator) -> torch.Tensor:
    """``n_negatives`` item rows per example, uniform over ``pool`` (sorted rows), never the positive."""
    position = torch.searchsorted(pool, positives)  # every positive is in the pool
    draws = torch.randint(0, len(pool) - 1, (len(positives), n_negatives), generator=generator)
    draws = draws + (draws >= position[:, None]).long()  # skip the positive without bias
    return pool[draws]


def train_projection(
    config: R2ENDConfig,
    user_vectors: np.ndarray,
    positive_rows: np.ndarray,
    item_vectors: np.ndarray,
    validate: Callable[[Projection], float] | None = None,
    negative_pool: np.ndarray | None = None,
) -> tuple[Projection, list[dict]]:
    """Train f with InfoNCE (``config.negatives`` sampled negatives) + lambda * L_reg.

    If ``validate`` is given and ``config.select_epoch_on_valid``, the weights of the
    epoch with the best validation score are returned (reported in the log).
    Negatives are drawn from ``negative_pool`` (item rows; default: every item).
    """
    torch.manual_seed(config.seed)
    generator = torch.Generator().manual_seed(config.seed)
    users = torch.from_numpy(np.ascontiguousarray(user_vectors, dtype=np.float32))
    items = torch.from_numpy(np.ascontiguousarray(item_vectors, dtype=np.float32))
    positives = torch.from_numpy(np.asarray(positive_rows, dtype=np.int64))
    pool = (
        torch.arange(len(items))
        if negative_pool is None
        else torch.from_numpy(np.sort(np.asarray(negative_pool, dtype=np.int64)))
    )
    model = Projection(users.shape[1], config.projection_dim)
    loss_fn = InfoNCEWithNormPenalty(config.temperature, config.reg_lambda)
    optimiser = torch.optim.Adam(model.parameters(), lr=config.projection_lr)
    history: list[dict] = []
    best_score, best_state = -1.0, None
    for epoch in range(1, config.projection_epochs + 1):
        model.train()
        order = torch.randperm(len(users), generator=generator)
        totals = {"loss": 0.0, "infonce": 0.0, "reg": 0.0}
        for start in range(0, len(order), config.projection_batch_size):
            idx = order[start : start + config.projection_batch_size]
            negatives = sample_negatives(positives[idx], pool, config.negatives, generator)
            loss, parts = loss_fn(model(users[idx]), model(items[positives[idx]]), model(items[negatives]))
            optimiser.zero_grad(set_to_none=True)
            loss.backward()
            optimiser.step()
            totals["loss"] += float(loss.detach()) * len(idx)
            totals["infonce"] += parts["infonce"] * len(idx)
            totals["reg"] += parts["reg"] * len(idx)
        entry = {"epoch": epoch, **{k: round(v / len(users), 5) for k, v in totals.items()}}
        if validate is not None:
            model.eval()
            entry["valid_NDCG@10"] = round(validate(model), 5)
            if entry["valid_NDCG@10"] > best_score:
                best_score, best_state = entry["valid_NDCG@10"], copy.deepcopy(model.state_dict())
        history.append(entry)
        log.info("projection %s", entry)
    if config.select_epoch_on_valid and best_state is not None:
        model.load_state_dict(best_state)
    model.eval()
    return model, history


@torch.no_grad()
def project(model: Projection | None, vectors: np.ndarray) -> np.ndarray:
    """L2-normalised projections (or the normalised inputs when there is no projection)."""
    tensor = torch.from_numpy(np.ascontiguousarray(vectors, dtype=np.float32))
    out = model(tensor) if model is not None else tensor
    return torch.nn.functional.normalize(out, dim=-1).numpy()
