"""Every R2END hyper-parameter in one typed object; defaults are the paper's (appendix C)."""

from __future__ import annotations

import hashlib
import json
from typing import Literal

from pydantic import BaseModel, Field

from index.verbalize import Verbaliser


class R2ENDConfig(BaseModel):
    """Configuration of one R2END training run (saved into every result and bundle)."""

    dataset: str = "ml-100k"
    variant: str = Field("r2end", description="name of this configuration in results and bundles")
    encoder: str = Field("all-MiniLM-L6-v2", description="frozen target/item encoder Enc and the student's initialisation")
    teacher_model: str = "qwen2.5-coder-1.5b"
    seed: int = 22
    verbaliser: Verbaliser = Field(
        default_factory=Verbaliser, description="history -> text H_u for the student, the evaluator and (via the bundle) serving"
    )

    # Distillation target (paper section 3.2); the switches give ablations (1)-(3).
    rationale: Literal["oracle", "unguided", "unguided-rs", "item"] = Field(
        "oracle",
        description="oracle: Enc(R_u ⊕ M_gt) (the paper); unguided: rationale without the oracle (ablation 1); "
        "unguided-rs: only users whose unguided rationale ranks the true item in the top rs_top_k (ablation 2); "
        "item: the true item's embedding Enc(D_gt ⊕ M_gt) alone (ablation 3)",
    )
    target_metadata: bool = Field(True, description="append the true item's metadata to the rationale (R'_u)")
    rs_top_k: int = 100
    rationale_users: int | None = Field(
        None,
        gt=0,
        description="distil on the rationales of this many users only, drawn with `seed` (a learning curve: how many "
        "rationales a dataset needs); None = every user with one. The projection still trains on every user",
    )
    distill: bool = True
    distill_epochs: int = 1
    distill_batch_size: int = 16
    distill_lr: float = 1e-5
    max_seq_length: int = 256

    # Items (section 3.3).
    item_text: Literal["description", "metadata"] = Field(
        "description", description="Enc(D_i ⊕ M_i), or Enc(M_i) where no teacher descriptions exist"
    )

    # Projection (section 3.4); projection=False is ablation (5), reg_lambda=0 is ablation (6).
    projection: bool = True
    projection_dim: int = 512
    negatives: int = 99
    temperature: float = 0.07
    reg_lambda: float = 0.5
    projection_epochs: int = 10
    projection_batch_size: int = 128
    projection_lr: float = 1e-4
    select_epoch_on_valid: bool = Field(True, description="keep the projection epoch with the best validation NDCG@10")

    # Beyond the paper (issue 7): the collaborative head and the cold-start protocol.
    cf: dict | None = Field(None, description="CFConfig fields to train R2END+CF on top of this model (None = the paper)")
    hybrid: dict | None = Field(
        None, description="HybridConfig fields to combine this model with SASRec-CE (R2END-Hybrid; None = off)"
    )
    cold_start_share: float = Field(0.0, description="hold this share of items out of all training stages (0 = off)")

    threads: int = 2
    encode_batch_size: int = 64
    student_cache: bool = Field(
        True, description="reuse a student distilled from identical inputs before ($R2END_HOME/cache/students)"
    )

    def fingerprint(self) -> str:
        """Short hash of everything that changes the trained model (the variant name excluded)."""
        payload = self.model_dump(exclude={"variant", "threads", "encode_batch_size", "student_cache"})
        return hashlib.sha256(json.dumps(payload, sort_keys=True).encode()).hexdigest()[:10]


ABLATIONS: dict[str, dict] = {
    "r2end": {},
    "abl1-unguided": {"rationale": "unguided"},
    "abl2-unguided-rs": {"rationale": "unguided-rs"},
    "abl3-item-target": {"rationale": "item"},
    "abl5-no-projection": {"projection": False},
    "abl6-no-reg": {"reg_lambda": 0.0},
    "r2end-long-projection": {"projection_epochs": 100},
    "r2end-cf-residual": {"cf": {"design": "item-residual"}},
    "r2end-cf-history": {"cf": {"design": "history-tower"}},
    "r2end-cf-sequence": {"cf": {"design": "sequence-tower", "tower_checkpoint": "auto"}},
    # The same collaborative heads on the teacher-free text path (ablation 3's settings): what a
    # user without an LLM budget can deploy, and the baseline that says what the teacher adds.
    "text-cf-residual": {"rationale": "item", "item_text": "metadata", "cf": {"design": "item-residual"}},
    "text-cf-history": {"rationale": "item", "item_text": "metadata", "cf": {"design": "history-tower"}},
    "text-cf-sequence": {
        "rationale": "item",
        "item_text": "metadata",
        "cf": {"design": "sequence-tower", "tower_checkpoint": "auto"},
    },
    # SASRec-CE's own scores plus the text path in one inner product (issue 12, training/r2end/hybrid.py).
    "r2end-hybrid": {"hybrid": {}},
    "text-hybrid": {"rationale": "item", "item_text": "metadata", "hybrid": {}},
    # The same with the text weight gated by history length (scripts/probe_gated_fusion.py).
    "r2end-hybrid-gated": {"hybrid": {"weight_gate": "history-length"}},
    "text-hybrid-gated": {"rationale": "item", "item_text": "metadata", "hybrid": {"weight_gate": "history-length"}},
    # The gated hybrids with new items placed to keep the text path's reach (new_item_rule="reach"); the
    # rule only moves new items, so these differ from the gated rows under the cold-start protocol alone.
    "r2end-hybrid-gated-reach": {"hybrid": {"weight_gate": "history-length", "new_item_rule": "reach"}},
    "text-hybrid-gated-reach": {
        "rationale": "item",
        "item_text": "metadata",
        "hybrid": {"weight_gate": "history-length", "new_item_rule": "reach"},
    },
}
"""Table 2 of the paper (ablation 4, mean-pooled history, is the ``meanpool`` baseline), and the
collaborative variants of issue 7. Every entry also runs under the cold-start protocol
with ``--cold-start`` (``cold_start_share=0.1``)."""
