"""SASRec (Kang & McAuley, 2018) trained with full-softmax cross-entropy over all items.

Causal self-attention over the item sequence; every position predicts the next
item, all positions of a user's sequence in one pass (the "SASRec+" / CE setup of
Klenitskiy & Vasilev, 2023, which beats BERT4Rec). Early stopping on validation
NDCG@10 with patience; the best epoch's weights are kept.
"""

from __future__ import annotations

import copy
import hashlib
import json
import math
import time
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np
import torch
from pydantic import BaseModel
from torch import nn

from training import run_archive
from training.data.preprocess import PreparedDataset


class SASRecConfig(BaseModel):
    """Hyper-parameters; defaults are the common ML-1M setting of the CE-loss literature."""

    hidden: int = 64
    layers: int = 2
    heads: int = 1
    dropout: float = 0.2
    max_len: int = 200
    lr: float = 1e-3
    weight_decay: float = 0.0
    batch_size: int = 128
    max_epochs: int = 200
    patience: int = 10
    seed: int = 22
    threads: int = 1
    device: str = "cpu"
    """torch device to train and score on (``cuda`` for a GPU); checkpoints load on any device."""

    def identity(self) -> dict:
        """The fields that make a different model (a checkpoint resumes only with equal identity).

        How long it may run (``max_epochs``, ``patience``) and where (``threads``, ``device``)
        are not among them: a run can be resumed with a higher cap, elsewhere.
        """
        return self.model_dump(exclude={"threads", "max_epochs", "patience", "device"})

    def fingerprint(self) -> str:
        """Short hash of :meth:`identity` (names checkpoint files)."""
        return hashlib.sha256(json.dumps(self.identity(), sort_keys=True).encode()).hexdigest()[:8]


class SASRecNet(nn.Module):
    """Embeddings + pre-norm causal Transformer encoder; scores are dot products with item embeddings."""

    def __init__(self, n_items: int, config: SASRecConfig):
        super().__init__()
        self.config = config
        self.items = nn.Embedding(n_items + 1, config.hidden, padding_idx=0)  # row 0 = padding
        self.positions = nn.Embedding(config.max_len, config.hidden)
        self.dropout = nn.Dropout(config.dropout)
        layer = nn.TransformerEncoderLayer(
            d_model=config.hidden,
            nhead=config.heads,
            dim_feedforward=config.hidden,
            dropout=config.dropout,
            activation="gelu",
            batch_first=True,
            norm_first=True,
        )
        self.encoder = nn.TransformerEncoder(layer, config.layers, enable_nested_tensor=False)
        self.norm = nn.LayerNorm(config.hidden)
        self.register_buffer("causal", torch.ones(config.max_len, config.max_len, dtype=torch.bool).triu(1), persistent=False)
        nn.init.normal_(self.items.weight, std=1.0 / math.sqrt(config.hidden))
        nn.init.normal_(self.positions.weight, std=0.02)

    def forward(self, sequences: torch.Tensor) -> torch.Tensor:
        """Hidden states ``(B, L, H)`` for left-padded item sequences ``(B, L)`` (0 = padding)."""
        length = sequences.shape[1]
        positions = torch.arange(length, device=sequences.device)
        x = self.items(sequences) * math.sqrt(self.config.hidden) + self.positions(positions)
        x = self.dropout(x)
        # Masked = future keys, or padding keys; a padding query may still see itself so that
        # no attention row is empty (an empty row gives NaN, which would poison the gradients).
        padding_keys = (sequences == 0)[:, None, :]
        eye = torch.eye(length, dtype=torch.bool, device=sequences.device)
        mask = self.causal[:length, :length] | (padding_keys & ~eye)
        mask = mask.repeat_interleave(self.config.heads, dim=0)
        x = self.encoder(x, mask=mask)
        return self.norm(x)

    def item_logits(self, hidden: torch.Tensor) -> torch.Tensor:
        """Scores over all real items (padding row excluded)."""
        return hidden @ self.items.weight[1:].T


def _left_pad(rows: Sequence[Sequence[int]], length: int) -> torch.Tensor:
    batch = torch.zeros((len(rows), length), dtype=torch.long)
    for i, row in enumerate(rows):
        row = list(row)[-length:]
        if row:
            batch[i, length - len(row) :] = torch.tensor(row, dtype=torch.long) + 1
    return batch


def next_item_loss(
    net: SASRecNet, inputs: torch.Tensor, labels: torch.Tensor, blocked: torch.Tensor | None = None
) -> tuple[torch.Tensor, int]:
    """Mean full-softmax cross-entropy over the non-padding positions of a batch, and their number.

    ``inputs`` are left-padded item sequences (rows + 1, 0 = padding) and ``labels`` the
    next item row at each position (-1 = padding): exactly what the model trains on.
    ``blocked`` (bool per item row) removes items from the softmax: their logits are -inf,
    so they are not even negatives and their embeddings get no gradient from the loss.
    """
    hidden = net(inputs)
    keep = labels >= 0
    logits = net.item_logits(hidden[keep])
    targets = labels[keep]
    if blocked is not None:
        if blocked[targets].any():
            raise ValueError(f"held-out item rows {sorted(set(targets[blocked[targets]].tolist()))[:5]} are training labels")
        logits = logits.masked_fill(blocked, float("-inf"))
    return nn.functional.cross_entropy(logits, targets), int(keep.sum())


class SASRec:
    """Train with :meth:`fit`, then score histories for the shared evaluator."""

    def __init__(self, config: SASRecConfig | None = None):
        self.config = config or SASRecConfig()
        self.name = "sasrec-ce"
        self.net: SASRecNet | None = None
        self.log: list[dict] = []

    def fit(
        self,
        ds: PreparedDataset,
        validate: Callable[[SASRec], dict[str, float]],
        progress: Callable[[dict], None] | None = None,
        checkpoint: Path | None = None,
        held_out: np.ndarray | None = None,
    ) -> list[dict]:
        """Train on each user's training part until validation NDCG@10 stops improving.

        With ``checkpoint``, the full training state (weights, optimiser, RNG, best weights,
        log) is saved after every epoch and a run with the same file resumes from it: long
        CPU trainings survive interruptions. The file is tied to the config, the split and
        the held-out items.

        ``held_out`` (bool per item row; the cold-start protocol's cold items) is kept out of
        training entirely: out of the inputs and labels (the training view already has none)
        and out of the output softmax, so these items are not trained even as negatives.
        Their embedding rows stay as initialised, which is what an id-based model has for an
        item added after training, and they are scored with them like every other item.
        """
        cfg = self.config
        torch.manual_seed(cfg.seed)
        np.random.seed(cfg.seed)
        torch.set_num_threads(cfg.threads)
        device = torch.device(cfg.device)
        self.net = SASRecNet(ds.n_items, cfg).to(device)
        optimiser = torch.optim.Adam(self.net.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
        train = [[row for row, _ in ds.train_sequence(u)] for u in range(ds.n_users)]
        train = [s for s in train if len(s) >= 2]
        inputs = _left_pad([s[:-1] for s in train], cfg.max_len)
        labels = _left_pad([s[1:] for s in train], cfg.max_len) - 1  # -1 = padding
        generator = torch.Generator().manual_seed(cfg.seed)
        best, best_state, since_best = -1.0, None, 0
        self.log = []
        identity = run_identity(cfg, ds.split_hash, held_out)
        blocked = None
        if held_out is not None and np.any(held_out):
            held_out = np.asarray(held_out, dtype=bool)
            if held_out.shape != (ds.n_items,):
                raise ValueError(f"held_out has shape {held_out.shape}, expected ({ds.n_items},)")
            blocked = torch.from_numpy(held_out.copy()).to(device)
            initial_rows = self.net.items.weight.detach()[1:][blocked].clone()
        first_epoch = 1
        if checkpoint is not None and checkpoint.is_file():
            state = torch.load(checkpoint, weights_only=False, map_location="cpu")  # RNG states must be CPU tensors
            if state["identity"] == identity:
                if state.get("best_only") and not run_finished(state, cfg):
                    raise ValueError(
                        f"{checkpoint}: keeps a finished run's best weights only (archived without its optimiser); "
                        f"it cannot train on to patience {cfg.patience} / {cfg.max_epochs} epochs: remove it to train from scratch"
                    )
                self.net.load_state_dict(state["net"])
                if not state.get("best_only"):
                    optimiser.load_state_dict(state["optimiser"])
                generator.set_state(state["generator"])
                torch.set_rng_state(state["torch_rng"])  # dropout masks continue as if never stopped
                best, best_state, since_best, self.log = state["best"], state["best_state"], state["since_best"], state["log"]
                first_epoch = len(self.log) + 1
        for epoch in range(first_epoch, cfg.max_epochs + 1):
            if since_best >= cfg.patience:
                break
            started = time.perf_counter()
            self.net.train()
            order = torch.randperm(len(train), generator=generator)
            total, count = 0.0, 0
            for start in range(0, len(order), cfg.batch_size):
                idx = order[start : start + cfg.batch_size]
                loss, n = next_item_loss(self.net, inputs[idx].to(device), labels[idx].to(device), blocked=blocked)
                optimiser.zero_grad(set_to_none=True)
                loss.backward()
                optimiser.step()
                if blocked is not None:  # weight decay would still shrink them: held-out rows stay as initialised
                    with torch.no_grad():
                        self.net.items.weight[1:][blocked] = initial_rows
                total += loss.item() * n
                count += n
            metrics = validate(self)
            entry = {"epoch": epoch, "loss": round(total / max(count, 1), 5), "seconds": round(time.perf_counter() - started, 2)}
            entry.update({f"valid_{k}": round(v, 5) for k, v in metrics.items() if k in ("HR@10", "NDCG@10")})
            self.log.append(entry)
            if progress:
                progress(entry)
            if metrics["NDCG@10"] > best:
                best, best_state, since_best = metrics["NDCG@10"], copy.deepcopy(self.net.state_dict()), 0
            else:
                since_best += 1
            if checkpoint is not None:
                checkpoint.parent.mkdir(parents=True, exist_ok=True)
                torch.save(
                    {
                        "identity": identity,
                        "net": self.net.state_dict(),
                        "optimiser": optimiser.state_dict(),
                        "generator": generator.get_state(),
                        "torch_rng": torch.get_rng_state(),
                        "best": best,
                        "best_state": best_state,
                        "since_best": since_best,
                        "log": self.log,
                    },
                    checkpoint.with_suffix(".tmp"),
                )
                checkpoint.with_suffix(".tmp").replace(checkpoint)
        if best_state is not None:
            self.net.load_state_dict(best_state)
        return self.log

    @torch.no_grad()
    def score(self, ds: PreparedDataset, users: Sequence[int], histories: Sequence[list[tuple[int, int]]]) -> np.ndarray:
        """Next-item scores from the last position of each history."""
        assert self.net is not None, "call fit() first"
        self.net.eval()
        batch = _left_pad([[row for row, _ in h] for h in histories], self.config.max_len).to(self.config.device)
        hidden = self.net(batch)[:, -1, :]
        return self.net.item_logits(hidden).cpu().numpy()


def run_finished(state: dict, config: SASRecConfig) -> bool:
    """Whether a checkpoint's run has stopped, by patience or by the epoch cap (both outside its identity)."""
    return state["since_best"] >= config.patience or len(state["log"]) >= config.max_epochs


def best_only(state: dict) -> dict:
    """A finished run's checkpoint reduced to what it is still used for (its best weights, log and
    identity; about a quarter of the file): the last epoch's weights and the optimiser exist only to
    train on, which a finished run does not. :meth:`SASRec.fit` refuses to train such a file further."""
    kept = {k: v for k, v in state.items() if k not in ("net", "optimiser")}
    return kept | {"net": state["best_state"], "optimiser": None, "best_only": True}


def run_identity(config: SASRecConfig, split_hash: str, held_out: np.ndarray | None = None) -> dict:
    """What a checkpoint is a run of: the model's identity, the split and the items kept out of training."""
    identity: dict = {"config": config.identity(), "split": split_hash}
    if held_out is not None and np.any(held_out):
        identity["held_out"] = np.flatnonzero(held_out).tolist()
    return identity


def checkpoint_path(folder: Path, label: str, config: SASRecConfig, split_hash: str, held_out: np.ndarray | None = None) -> Path:
    """The one naming rule for SASRec checkpoints, ``{label}-{fingerprint}[-cold]-{split}.pt`` (``-cold``
    when items are held out, as in :func:`run_identity`): the fingerprint names the model, so
    :func:`finished_checkpoint` finds a run of it under any label."""
    cold = "-cold" if "held_out" in run_identity(config, split_hash, held_out) else ""
    return Path(folder) / f"{label}-{config.fingerprint()}{cold}-{split_hash[:8]}.pt"


def finished_checkpoint(folder: Path, config: SASRecConfig, split_hash: str, held_out: np.ndarray | None = None) -> Path | None:
    """A finished run of exactly this model on this data under any label (e.g. the baseline grid's run of
    the tuned configuration), so it is not trained twice; None if there is none. Only a finished run
    (stopped by patience or the epoch cap) is reused, so two processes never write one file; one archived
    whole in ``data/runs/`` is restored first."""
    wanted = run_identity(config, split_hash, held_out)
    pattern = checkpoint_path(folder, "*", config, split_hash, held_out).name
    run_archive.restore_matching(folder, pattern)  # a finished run lost with its machine but archived whole
    for path in sorted(Path(folder).glob(pattern)):
        state = torch.load(path, weights_only=False, map_location="cpu")
        if state["identity"] == wanted and run_finished(state, config):
            return path
    return None


def load_net(path: str | Path, n_items: int, split_hash: str, held_out: np.ndarray | None = None) -> SASRecNet:
    """The best weights of a checkpoint written by :meth:`SASRec.fit`, refused unless it was trained
    on this split (and, with ``held_out``, with exactly these items kept out of its softmax)."""
    state = torch.load(path, weights_only=False, map_location="cpu")
    identity = state["identity"]
    if identity["split"] != split_hash:
        raise ValueError(f"{path}: SASRec checkpoint of another split ({identity['split'][:8]} != {split_hash[:8]})")
    expected = np.flatnonzero(held_out).tolist() if held_out is not None and held_out.any() else None
    if identity.get("held_out") != expected:
        raise ValueError(
            f"{path}: SASRec checkpoint held out {len(identity.get('held_out') or [])} items, "
            f"this data holds out {len(expected or [])}"
        )
    config = SASRecConfig(**{**identity["config"], "threads": 1})
    net = SASRecNet(n_items, config)
    net.load_state_dict(state["best_state"] or state["net"])
    net.eval()
    return net
