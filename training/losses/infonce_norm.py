"""The projection objective of R2END (paper eqs. 7-9): InfoNCE over sampled negatives plus an L2-norm term.

Eq. 7 as printed sums only over negatives in the denominator; we use the standard
InfoNCE form with the positive included (softmax cross-entropy with the positive at
index 0), which is what "maximise the similarity to the positive relative to the
negatives" means and is bounded below. Eq. 8 penalises the L2 norms (not squared)
of the user, positive and mean negative projections, weighted by ``reg_lambda``.
"""

from __future__ import annotations

import torch
from torch import nn
from torch.nn import functional as F


class InfoNCEWithNormPenalty(nn.Module):
    """``L = InfoNCE(z_u, z_pos, z_neg; tau) + lambda * (|z_u| + |z_pos| + mean_j |z_j|)``, batch-averaged."""

    def __init__(self, temperature: float = 0.07, reg_lambda: float = 0.5):
        super().__init__()
        self.temperature = temperature
        self.reg_lambda = reg_lambda

    def forward(self, z_user: torch.Tensor, z_pos: torch.Tensor, z_neg: torch.Tensor) -> tuple[torch.Tensor, dict[str, float]]:
        """``z_user``, ``z_pos``: (B, d); ``z_neg``: (B, N, d). Returns the loss and its parts."""
        user = F.normalize(z_user, dim=-1)
        pos = (user * F.normalize(z_pos, dim=-1)).sum(-1, keepdim=True)
        neg = torch.einsum("bd,bnd->bn", user, F.normalize(z_neg, dim=-1))
        logits = torch.cat([pos, neg], dim=1) / self.temperature
        infonce = F.cross_entropy(logits, torch.zeros(len(logits), dtype=torch.long, device=logits.device))
        reg = (z_user.norm(dim=-1) + z_pos.norm(dim=-1) + z_neg.norm(dim=-1).mean(dim=1)).mean()
        loss = infonce + self.reg_lambda * reg
        return loss, {"infonce": float(infonce.detach()), "reg": float(reg.detach())}
