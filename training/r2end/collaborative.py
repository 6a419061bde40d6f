"""R2END+CF: the paper's text path plus learned collaborative terms, kept beside it.

Two designs, both keeping LLM-free serving and cold-start:

* ``item-residual``: z_i = norm(norm(f(e_i)) + r_i), with a learned per-item residual r_i
  (zero-initialised, L2-penalised, randomly dropped per batch so the text path must stay
  good on its own); users are the paper's z_u = norm(f(e_u)). Serving is unchanged: the
  residual is baked into the bundle's item vectors.
* ``history-tower``: items as above, and users z_u = norm(norm(f(e_u)) + mean_j q_j)
  over learned input embeddings q_j of the last ``history_items`` items of the history
  (also zero-initialised, dropped at random). The service adds the mean of the bundle's
  ``history_item_embeddings.npy`` rows to the ONNX text vector.
* ``sequence-tower``: items as above, and users z_u = norm(norm(f(e_u)) + W h_u) where h_u
  is a SASRec encoder over the history's item ids (optionally initialised from a trained
  SASRec-CE checkpoint) and W starts at zero, so training starts from the paper model.
  The tower is exported as its own ONNX graph (``history_encoder.onnx``). Because the
  tower's output lives in the text space, it also scores *new* items through their text.
  Training runs the tower once per user and reads every prefix off its causal states
  (``CFConfig.tower_pass``), as SASRec trains; serving runs it on the whole history.

New items have r = q = 0: they fall back to the text path exactly. Training uses full
softmax cross-entropy over all trainable items on several prefixes per user (not only
the last one, which is all the paper's teacher data covers), starting from the paper
variant's trained projection f, with early stopping on validation NDCG@10.
"""

from __future__ import annotations

import copy
import logging
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Literal

import numpy as np
import torch
from pydantic import BaseModel
from torch import nn
from torch.nn import functional as F

from training.data.preprocess import PreparedDataset
from training.evaluation.evaluator import evaluate
from training.r2end.pipeline import TrainedR2END
from training.r2end.projection import Projection

log = logging.getLogger(__name__)


class CFConfig(BaseModel):
    """Hyper-parameters of the collaborative head."""

    design: Literal["item-residual", "history-tower", "sequence-tower"] = "history-tower"
    prefixes_per_user: int = 10
    history_items: int = 50
    epochs: int = 40
    patience: int = 5
    batch_size: int = 256
    lr: float = 1e-3
    temperature: float = 0.07
    residual_l2: float = 1e-4
    residual_dropout: float = 0.3
    tower_checkpoint: str | None = None
    """sequence-tower: a SASRec checkpoint (``r2end baseline sasrec-ce`` writes them) to start from."""
    tower_dropout: float = 0.1
    """sequence-tower: share of training examples whose tower output is dropped (text alone must work)."""
    tower_pass: Literal["per-user", "per-prefix"] = "per-user"
    """sequence-tower: ``per-user`` runs the tower once over each user's training sequence and reads every
    prefix's state off its causal position, as SASRec itself trains (about ``prefixes_per_user`` times
    cheaper; a prefix's items then sit at the positions the whole sequence gives them); ``per-prefix``
    left-pads and runs every example on its own (every sequence-tower row before 2026-12-04)."""
    seed: int = 22


class CFHead(nn.Module):
    """The shared projection f plus item residuals and (optionally) history-item embeddings."""

    def __init__(self, projection: Projection, n_items: int, design: str, tower: nn.Module | None = None):
        super().__init__()
        self.projection = copy.deepcopy(projection)
        dim = projection.linear.out_features
        self.residual = nn.Parameter(torch.zeros(n_items, dim))
        self.history = nn.Parameter(torch.zeros(n_items, dim)) if design == "history-tower" else None
        self.tower = tower

    def text(self, embeddings: torch.Tensor) -> torch.Tensor:
        return F.normalize(self.projection(embeddings), dim=-1)

    def items(self, item_embeddings: torch.Tensor, keep: torch.Tensor | None = None) -> torch.Tensor:
        residual = self.residual if keep is None else self.residual * keep[:, None]
        return F.normalize(self.text(item_embeddings) + residual, dim=-1)

    def users(
        self,
        user_embeddings: torch.Tensor,
        history_rows: torch.Tensor,
        history_mask: torch.Tensor,
        sequence: torch.Tensor | None = None,
        tower_keep: torch.Tensor | None = None,
        tower_at: tuple[torch.Tensor, torch.Tensor] | None = None,
    ) -> torch.Tensor:
        text = self.text(user_embeddings)
        if self.tower is not None and sequence is not None:
            contribution = self.tower(sequence, tower_at)
            if tower_keep is not None:
                contribution = contribution * tower_keep[:, None]
            return F.normalize(text + contribution, dim=-1)
        if self.history is None:
            return text
        summed = (self.history[history_rows] * history_mask[..., None]).sum(1)
        mean = summed / history_mask.sum(1, keepdim=True).clamp(min=1.0)
        return F.normalize(text + mean, dim=-1)


class SequenceTower(nn.Module):
    """SASRec over item rows (left-padded, 0 = padding, rows shifted by 1) -> W h_last in the text space."""

    def __init__(self, net: nn.Module, out_dim: int):
        super().__init__()
        self.net = net
        self.out = nn.Linear(net.config.hidden, out_dim, bias=False)
        nn.init.zeros_(self.out.weight)  # start exactly at the paper model

    def forward(self, sequence: torch.Tensor, at: tuple[torch.Tensor, torch.Tensor] | None = None) -> torch.Tensor:
        """The state after the last item, or (``at`` = rows, columns) after chosen causal positions."""
        hidden = self.net(sequence)
        return self.out(hidden[:, -1, :] if at is None else hidden[at[0], at[1]])


def build_tower(n_items: int, out_dim: int, checkpoint: str | None) -> SequenceTower:
    """A SASRec tower, from a checkpoint's best weights when given."""
    from training.models.sasrec import SASRecConfig, SASRecNet

    if checkpoint:
        state = torch.load(checkpoint, weights_only=False)
        config = SASRecConfig(**{**state["identity"]["config"], "threads": 1})
        net = SASRecNet(n_items, config)
        net.load_state_dict(state["best_state"] or state["net"])
    else:
        net = SASRecNet(n_items, SASRecConfig())
    return SequenceTower(net, out_dim)


def sasrec_checkpoint(ds: PreparedDataset, held_out: np.ndarray | None = None) -> str:
    """Train (or finish, or reuse) SASRec-CE with its tuned configuration on exactly this data.

    The configuration is the one ``r2end baseline sasrec-ce`` selected on validation (its
    result file), so the tower starts from the baseline it has to beat, and the baseline's own
    finished run of it is reused when it is there (same model, seed and data); the checkpoint is
    tied to the data's split hash, so the cold-start view gets its own; ``held_out`` items
    (the cold-start protocol's) are kept out of its output softmax as well.
    """
    from training.evaluation.report import load_results
    from training.models.sasrec import SASRec, SASRecConfig, checkpoint_path, finished_checkpoint
    from training.paths import runs_dir

    tuned = next((r["config"].get("best") for r in load_results(ds.name) if r["model"] == "sasrec-ce"), None) or {}
    config = SASRecConfig(**{**tuned, "threads": torch.get_num_threads()})
    folder = runs_dir() / "sasrec" / ds.name
    path = finished_checkpoint(folder, config, ds.split_hash, held_out) or checkpoint_path(
        folder, "cf-tower", config, ds.split_hash, held_out
    )
    log.info("R2END+CF: SASRec-CE tower init %s -> %s", config.model_dump(), path)
    SASRec(config).fit(
        ds,
        lambda m: evaluate(m, ds, "valid", keep_per_user=False).metrics,
        progress=lambda e: log.info("tower SASRec %s", e),
        checkpoint=path,
        held_out=held_out,
    )
    return str(path)


@dataclass
class CFModel:
    """A trained head with the arrays a bundle needs, and a scorer for the evaluator."""

    base: TrainedR2END
    head: CFHead
    config: CFConfig
    trainable: np.ndarray
    item_vectors: np.ndarray
    history_table: np.ndarray | None
    log: list[dict]
    name: str = "r2end-cf"

    def score(self, ds: PreparedDataset, users: Sequence[int], histories: Sequence[list[tuple[int, int]]]) -> np.ndarray:
        """Cosine of the CF user vector with every item vector."""
        return user_vectors(self.head, self.base, ds, histories, self.config.history_items, self.trainable) @ self.item_vectors.T


def _history_batch(histories: Sequence[list[tuple[int, int]]], length: int) -> tuple[torch.Tensor, torch.Tensor]:
    rows = torch.zeros((len(histories), length), dtype=torch.long)
    mask = torch.zeros((len(histories), length), dtype=torch.float32)
    for i, history in enumerate(histories):
        recent = [row for row, _ in history][-length:]
        if recent:
            rows[i, : len(recent)] = torch.tensor(recent)
            mask[i, : len(recent)] = 1.0
    return rows, mask


@torch.no_grad()
def user_vectors(
    head: CFHead,
    base: TrainedR2END,
    ds: PreparedDataset,
    histories: Sequence[list[tuple[int, int]]],
    length: int,
    known: np.ndarray | None = None,
) -> np.ndarray:
    """z_u for histories (text through the base model's student, ids through the head)."""
    head.eval()
    embeddings = torch.from_numpy(base.user_embeddings(base.history_texts(ds, histories)))
    rows, mask = _history_batch(histories, length)
    return head.users(embeddings, rows, mask, _sequences(head, histories, known)).numpy()


def _sequences(head: CFHead, histories: Sequence[list[tuple[int, int]]], known: np.ndarray | None = None) -> torch.Tensor | None:
    """Left-padded SASRec input for the sequence tower (None for the other designs).

    Items the tower never trained on (held out, or added live) are left out of its input,
    exactly as the service leaves out items beyond the trained catalogue.
    """
    if head.tower is None:
        return None
    from training.models.sasrec import _left_pad

    return _left_pad([[row for row, _ in h if known is None or known[row]] for h in histories], head.tower.net.config.max_len)


@dataclass
class UserPass:
    """The sequence tower's input when it runs once per user (``tower_pass="per-user"``).

    ``sequences`` holds each user's known training items, left-padded (one row per user and a last
    all-padding row for histories with no known item); example ``i``'s state is the causal one at
    (``row[i]``, ``column[i]``): the position of the last item its history holds.
    """

    sequences: torch.Tensor
    row: torch.Tensor
    column: torch.Tensor
    examples_of: list[torch.Tensor]


def user_pass(
    examples: Sequence[tuple[int, list[tuple[int, int]], int]], n_users: int, known: np.ndarray, max_len: int
) -> UserPass:
    """Map every example's history onto its user's longest one (they are all prefixes of it)."""
    from training.models.sasrec import _left_pad

    longest: dict[int, list[int]] = {}
    for u, history, _ in examples:
        rows = [r for r, _ in history if known[r]]
        if len(rows) >= len(longest.get(u, [])):
            longest[u] = rows
    rows_of, columns, examples_of = [], [], [[] for _ in range(n_users)]
    for i, (u, history, _) in enumerate(examples):
        held = sum(1 for r, _ in history if known[r])
        full = len(longest[u])
        column = max_len - full + held - 1
        if held and column < max_len - min(full, max_len):
            raise ValueError(f"tower_pass='per-user' needs the tower's max_len ({max_len}) to cover every prefix")
        rows_of.append(u if held else n_users)
        columns.append(column if held else max_len - 1)
        examples_of[u].append(i)
    return UserPass(
        _left_pad([longest.get(u, []) for u in range(n_users)] + [[]], max_len),
        torch.tensor(rows_of),
        torch.tensor(columns),
        [torch.tensor(e, dtype=torch.long) for e in examples_of],
    )


def _batches(
    n_examples: int,
    sequences: torch.Tensor | None,
    by_user: UserPass | None,
    config: CFConfig,
    generator: torch.Generator,
) -> Iterator[tuple[torch.Tensor, torch.Tensor | None, tuple[torch.Tensor, torch.Tensor] | None]]:
    """``(examples, tower input, tower positions)`` per step: random examples, or random users' examples."""
    if by_user is None:
        order = torch.randperm(n_examples, generator=generator)
        for start in range(0, n_examples, config.batch_size):
            idx = order[start : start + config.batch_size]
            yield idx, sequences[idx] if sequences is not None else None, None
        return
    padding = len(by_user.examples_of)
    users = torch.randperm(padding, generator=generator)
    step = max(1, config.batch_size // config.prefixes_per_user)
    for start in range(0, padding, step):
        chunk = users[start : start + step]
        idx = torch.cat([by_user.examples_of[u] for u in chunk.tolist()])
        if not len(idx):
            continue
        rows = by_user.row[idx]
        in_batch = torch.cat([chunk, torch.tensor([padding])]) if bool((rows == padding).any()) else chunk
        position = torch.full((padding + 1,), -1, dtype=torch.long)
        position[in_batch] = torch.arange(len(in_batch))
        yield idx, by_user.sequences[in_batch], (position[rows], by_user.column[idx])


def training_examples(ds: PreparedDataset, per_user: int) -> list[tuple[int, list[tuple[int, int]], int]]:
    """``(user, history, target)`` for the last ``per_user`` positions of each training part."""
    examples = []
    for u in range(ds.n_users):
        train = ds.train_sequence(u)
        for position in range(max(1, len(train) - per_user), len(train)):
            examples.append((u, train[:position], train[position][0]))
    return examples


def train_cf(
    base: TrainedR2END,
    ds: PreparedDataset,
    config: CFConfig,
    trainable: np.ndarray | None = None,
) -> CFModel:
    """Train the head on top of a trained paper model (its student and projection stay fixed / start f)."""
    if base.projection is None:
        raise ValueError("R2END+CF starts from a model with a projection layer")
    torch.manual_seed(config.seed)
    generator = torch.Generator().manual_seed(config.seed)
    trainable = np.ones(ds.n_items, dtype=bool) if trainable is None else trainable
    examples = training_examples(ds, config.prefixes_per_user)
    texts = base.history_texts(ds, [h for _, h, _ in examples])
    log.info("R2END+CF: %d training examples; encoding their history texts", len(examples))
    user_emb = torch.from_numpy(base.user_embeddings(texts))
    hist_rows, hist_mask = _history_batch([h for _, h, _ in examples], config.history_items)
    targets = torch.tensor([t for _, _, t in examples])
    item_emb = torch.from_numpy(base.item_embeddings)
    frozen = torch.from_numpy(~trainable)
    tower = None
    if config.design == "sequence-tower":
        checkpoint = sasrec_checkpoint(ds, ~trainable) if config.tower_checkpoint == "auto" else config.tower_checkpoint
        tower = build_tower(ds.n_items, base.projection.linear.out_features, checkpoint)
    head = CFHead(base.projection, ds.n_items, config.design, tower)
    by_user = (
        user_pass(examples, ds.n_users, trainable, tower.net.config.max_len)
        if tower is not None and config.tower_pass == "per-user"
        else None
    )
    sequences = _sequences(head, [h for _, h, _ in examples], trainable) if by_user is None else None
    optimiser = torch.optim.Adam(head.parameters(), lr=config.lr)
    best, best_state, since, history_log = -1.0, None, 0, []
    model = CFModel(base, head, config, trainable, np.zeros(0), None, history_log, name=f"r2end-cf-{config.design}")
    for epoch in range(1, config.epochs + 1):
        head.train()
        total = 0.0
        for idx, tower_input, tower_at in _batches(len(examples), sequences, by_user, config, generator):
            keep_items = (torch.rand(ds.n_items, generator=generator) >= config.residual_dropout).float()
            items = head.items(item_emb, keep_items * torch.from_numpy(trainable).float())
            mask = hist_mask[idx] * (torch.rand(hist_mask[idx].shape, generator=generator) >= config.residual_dropout).float()
            tower_keep = (torch.rand(len(idx), generator=generator) >= config.tower_dropout).float()
            users = head.users(user_emb[idx], hist_rows[idx], mask, tower_input, tower_keep, tower_at)
            logits = users @ items.T / config.temperature
            logits = logits.masked_fill(frozen[None, :], float("-inf"))
            loss = F.cross_entropy(logits, targets[idx])
            penalty = head.residual.pow(2).sum(1).mean() + (
                head.history.pow(2).sum(1).mean() if head.history is not None else 0.0
            )
            (loss + config.residual_l2 * penalty).backward()
            optimiser.step()
            optimiser.zero_grad(set_to_none=True)
            with torch.no_grad():  # held-out items keep r = q = 0: they must look like new items
                head.residual[frozen] = 0.0
                if head.history is not None:
                    head.history[frozen] = 0.0
            total += float(loss.detach()) * len(idx)
        _refresh(model, item_emb)
        valid = evaluate(model, ds, "valid", keep_per_user=False).metrics["NDCG@10"]
        entry = {"epoch": epoch, "loss": round(total / len(examples), 5), "valid_NDCG@10": round(valid, 5)}
        history_log.append(entry)
        log.info("R2END+CF %s", entry)
        if valid > best:
            best, best_state, since = valid, copy.deepcopy(head.state_dict()), 0
        else:
            since += 1
            if since >= config.patience:
                break
    if best_state is not None:
        head.load_state_dict(best_state)
    _refresh(model, item_emb)
    return model


@torch.no_grad()
def _refresh(model: CFModel, item_emb: torch.Tensor) -> None:
    model.head.eval()
    model.item_vectors = model.head.items(item_emb).numpy()
    model.history_table = model.head.history.detach().numpy().copy() if model.head.history is not None else None
