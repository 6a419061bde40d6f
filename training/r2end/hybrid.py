"""R2END-Hybrid: SASRec-CE's scores kept intact, the text path added in one inner product.

The R2END+CF heads (:mod:`training.r2end.collaborative`) learn a collaborative term *inside*
the text space, and on warm items none of them reaches SASRec-CE. This design starts from the
other end: a trained SASRec-CE (the reference itself) and a trained text path, combined so
that one FAISS inner-product search ranks by

    score(u, i) = s_sas(u, i) / sd_u(s_sas) + w * s_text(u, i) / sd_u(s_text)     (warm items)
    score(u, i) = (A z_i + a) . h_u / sd_u(s_sas) + w * s_text(u, i) / sd_u(s_text) + b   (new items)

i.e. the per-user standardised sum of the two rankers (``w`` chosen on validation; with
``weight_gate=history-length``, one ``w`` per history-length bucket, :func:`choose_length_gate`), where
``sd_u`` is the spread of a user's scores over the warm catalogue. Both spreads have closed
forms, ``sd_u(s_sas) = sqrt(h_u' C_E h_u)`` and ``sd_u(s_text) = sqrt(z_u' C_Z z_u)`` with the
warm items' covariance matrices C_E (SASRec item embeddings) and C_Z (text item vectors), so
the whole score is an inner product of

    user      [ h_u ; w * sd(h_u) / sd(z_u) * z_u ; b * sd(h_u) ]
    warm item [ E_i ; z_i ; 0 ]
    new item  [ A z_i + a ; c * z_i ; 1 ]

(multiplying a user's scores by ``sd(h_u)`` changes no ranking). A new item has no SASRec
embedding: ``A``, ``a`` map its text vector to one (ridge regression fitted on warm items), and
``b`` (in units of the user's SASRec score spread) calibrates how new items compete with warm
ones, and ``c`` how much their text counts (for a new item the text is all there is, while the
mapped embedding is a shrunk guess). ``c`` and ``b`` are chosen on validation with *pseudo-new* items: a random share of warm items whose
vectors are replaced by the new-item form, with ``A`` fitted without them (the cold-start
protocol's validation has no held-out targets, by construction). Held-out items are in no
input of any stage: SASRec's softmax excludes them (:func:`collaborative.sasrec_checkpoint`),
its input leaves them out, and ``A`` and the covariances use warm rows only.

The vectors themselves are built by :mod:`index.hybrid` (pure numpy), the one implementation the
service and bundle evaluation use too; this module fits the parts and chooses ``w``, ``c`` and ``b``.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from typing import Literal

import numpy as np
import torch
from pydantic import BaseModel, Field

from index.hybrid import history_weights, item_vectors, sasrec_input, user_vectors
from training.data.preprocess import PreparedDataset
from training.evaluation.evaluator import evaluate
from training.r2end.pipeline import TrainedR2END, refit_without_items

log = logging.getLogger(__name__)


class HybridConfig(BaseModel):
    """How the two rankers are combined; the grids are searched on validation only."""

    sasrec_checkpoint: str = "auto"
    """A SASRec-CE checkpoint of this split, or ``auto``: the tuned configuration trained (or reused) on this data."""
    weights: tuple[float, ...] = (0.0, 0.02, 0.05, 0.1, 0.2, 0.3, 0.5, 1.0)
    """Candidates for ``w``, the text path's weight in SASRec score-spread units."""
    weight_gate: Literal["none", "history-length"] = "none"
    """``history-length``: one ``w`` per bucket of users by history length (quantiles of the validation
    histories), each chosen on validation among ``weights``. scripts/probe_gated_fusion.py found the text
    helping long histories more (issue 12)."""
    gate_buckets: int = Field(3, ge=2, le=10)
    """How many history-length buckets the gate has (equal shares of the validation users)."""
    new_item_biases: tuple[float, ...] = (-1.0, 0.0, 0.25, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9, 1.0, 1.25, 1.5, 2.0)
    """Candidates for ``b``, new items' offset in units of the user's SASRec score spread."""
    new_item_text_scales: tuple[float, ...] = (1.0, 2.0, 5.0, 10.0)
    """Candidates for ``c``, how much more a new item's text counts than a warm item's."""
    new_item_rule: Literal["keep-warm", "reach", "ndcg"] = "keep-warm"
    """How ``c`` and ``b`` are chosen. ``keep-warm``: the most pseudo-new hits while the warm-target
    validation NDCG@10 stays at least SASRec-CE's alone (the text's gain on warm items is spent on
    new ones: the product promise is SASRec's accuracy on seen items *and* reach on new ones);
    ``reach``: the best validation NDCG@10 while the pseudo-new hit rate stays at least ``reach_share``
    of the text path's alone (new items found as often as the text path finds them, warm accuracy
    paying for it: issue 12's cold-reach condition made the rule); ``ndcg``: the best validation
    NDCG@10 over all users (which, when new items are hard to place, buries them)."""
    reach_share: float = Field(0.9, gt=0.0, le=1.0)
    """``reach``: the share of the text path's pseudo-new validation HR@10 the hybrid must keep."""
    pseudo_new_share: float = 0.1
    """Share of warm items treated as new when ``b`` is chosen (the cold-start protocol's share)."""
    pseudo_new_projection: Literal["shared", "held-out"] = "held-out"
    """The text path the ``(c, b)`` grid is measured with. ``held-out`` (default): one refit without the
    pseudo-new items (:func:`~training.r2end.pipeline.refit_without_items`), so the grid, the reach floor
    included, sees them as the service sees new items; ``shared``: the trained one, which learned them
    (their text is placed better than a new item's is: the reach floor came out about twice the text
    path's real cold-target reach on both datasets, docs/RESULTS.md). The chosen ``(c, b)`` is applied to
    the trained path. The refit costs one projection training (seconds on ML-100K, minutes on ML-1M)."""
    ridge: float = 1.0
    seed: int = 22


def _covariance(rows: np.ndarray) -> np.ndarray:
    centred = rows - rows.mean(0, keepdims=True)
    return (centred.T @ centred / max(len(rows) - 1, 1)).astype(np.float32)


def fit_text_to_sasrec(text: np.ndarray, sasrec: np.ndarray, ridge: float) -> np.ndarray:
    """Ridge regression ``[z, 1] -> E`` (the bias column unpenalised): a ``(D + 1, H)`` matrix."""
    x = np.hstack([text, np.ones((len(text), 1), dtype=text.dtype)]).astype(np.float64)
    penalty = ridge * np.eye(x.shape[1])
    penalty[-1, -1] = 0.0
    return np.linalg.solve(x.T @ x + penalty, x.T @ sasrec.astype(np.float64)).astype(np.float32)


def fit_parts(
    sasrec_items: np.ndarray, text_items: np.ndarray, trained: np.ndarray, ridge: float
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """``(A, C_E, C_Z)`` from the ``trained`` (warm) rows only: held-out items enter none of them."""
    warm_sasrec, warm_text = sasrec_items[trained], text_items[trained]
    return fit_text_to_sasrec(warm_text, warm_sasrec, ridge), _covariance(warm_sasrec), _covariance(warm_text)


@dataclass
class HybridModel:
    """SASRec-CE + a text path as one inner-product model, a scorer for the evaluator."""

    base: TrainedR2END
    net: torch.nn.Module
    config: HybridConfig
    trained: np.ndarray
    """Items SASRec learned (False: held out, or added later); their E rows are never read."""
    text_items: np.ndarray
    mapping: np.ndarray
    cov_cf: np.ndarray
    cov_text: np.ndarray
    weight: float = 0.0
    bias: float = 0.0
    text_scale: float = 1.0
    log: list[dict] = field(default_factory=list)
    name: str = "r2end-hybrid"
    length_edges: tuple[float, ...] = ()
    """History-length gate (:func:`index.hybrid.history_weights`): bucket edges; empty = ``weight`` for everyone."""
    length_weights: tuple[float, ...] = ()

    def weights(self, histories: Sequence[Sequence[object]]) -> float | np.ndarray:
        """w per user: the gate's bucket weight, or ``weight``."""
        return history_weights(histories, self.weight, self.length_edges, self.length_weights)

    @property
    def sasrec_items(self) -> np.ndarray:
        return self.net.items.weight[1:].detach().numpy()

    @property
    def item_vectors(self) -> np.ndarray:
        return item_vectors(self.sasrec_items, self.text_items, ~self.trained, self.mapping, self.text_scale)

    def set_text_item_vectors(self, rows: np.ndarray, vectors: np.ndarray) -> None:
        """New text vectors for ``rows`` (e.g. held-out items embedded by the bundle's item graph)."""
        self.text_items = self.text_items.copy()
        self.text_items[rows] = vectors

    @torch.no_grad()
    def hidden(self, histories: Sequence[list[tuple[int, int]]]) -> np.ndarray:
        """SASRec's last hidden state h_u; items it never learned are left out of its input (the service's rule, one function)."""
        self.net.eval()
        batch = sasrec_input([[row for row, _ in h] for h in histories], self.trained, self.net.config.max_len)
        return self.net(torch.from_numpy(batch))[:, -1, :].numpy()

    def users(self, ds: PreparedDataset, histories: Sequence[list[tuple[int, int]]]) -> tuple[np.ndarray, np.ndarray]:
        """(h_u, z_u) for histories."""
        return self.hidden(histories), self.base.user_vectors(self.base.history_texts(ds, histories))

    def score(self, ds: PreparedDataset, users: Sequence[int], histories: Sequence[list[tuple[int, int]]]) -> np.ndarray:
        hidden, text = self.users(ds, histories)
        return user_vectors(hidden, text, self.cov_cf, self.cov_text, self.weights(histories), self.bias) @ self.item_vectors.T


class _Fixed:
    """Precomputed user parts, scored against a given item matrix (validation grids without re-encoding).

    ``weight``: one w, or ``None`` for the model's own (its history-length gate, if it has one)."""

    def __init__(
        self,
        name: str,
        parts: dict[int, tuple[np.ndarray, np.ndarray]],
        model: HybridModel,
        items: np.ndarray,
        weight: float | None,
        bias: float,
    ):
        self.name, self.parts, self.model, self.items, self.weight, self.bias = name, parts, model, items, weight, bias

    def score(self, ds, users, histories):  # the evaluator's Scorer protocol
        hidden = np.stack([self.parts[u][0] for u in users])
        text = np.stack([self.parts[u][1] for u in users])
        weight = self.model.weights(histories) if self.weight is None else self.weight
        return user_vectors(hidden, text, self.model.cov_cf, self.model.cov_text, weight, self.bias) @ self.items.T


class _TextAlone:
    """The text path by itself (z_u . z_i) from the precomputed user parts: the reach the ``reach`` rule keeps."""

    name = "text"

    def __init__(self, parts: dict[int, tuple[np.ndarray, np.ndarray]], items: np.ndarray):
        self.parts, self.items = parts, items

    def score(self, ds, users, histories):  # the evaluator's Scorer protocol
        return np.stack([self.parts[u][1] for u in users]) @ self.items.T


def choose_new_item_form(candidates: list[dict], rule: str, floor: float | None) -> dict:
    """The ``(c, b)`` row a rule picks from the pseudo-new grid (rows as logged by :func:`train_hybrid`).

    ``keep-warm``: ``floor`` is SASRec-CE's warm-target NDCG@10; the most pseudo-new hits among rows
    at or above it. ``reach``: ``floor`` is the pseudo-new HR@10 to keep; the best validation NDCG@10
    among rows at or above it. A rule no row can meet (or ``floor`` None: no pseudo-new targets)
    falls back with a warning: ``keep-warm`` and ``ndcg`` to the best NDCG@10, ``reach`` to the most
    pseudo-new hits (the nearest to the reach it was asked for)."""
    best_ndcg = max(candidates, key=lambda row: row["valid_NDCG@10"])

    def hits(row: dict) -> float:
        return row["pseudo_new_target_HR@10"] or 0.0

    if rule == "ndcg" or floor is None:
        return best_ndcg
    if rule == "keep-warm":
        keeping = [row for row in candidates if row["warm_target_NDCG@10"] >= floor]
        if keeping:
            return max(keeping, key=lambda row: (hits(row), row["valid_NDCG@10"]))
        log.warning("R2END-Hybrid: no (c, b) keeps SASRec-CE's warm-target validation NDCG@10 %.4f; best NDCG@10 instead", floor)
        return best_ndcg
    reaching = [row for row in candidates if hits(row) >= floor]
    if reaching:
        return max(reaching, key=lambda row: (row["valid_NDCG@10"], hits(row)))
    log.warning("R2END-Hybrid: no (c, b) keeps pseudo-new HR@10 %.4f; the most pseudo-new hits instead", floor)
    return max(candidates, key=lambda row: (hits(row), row["valid_NDCG@10"]))


def choose_length_gate(
    per_weight: dict[float, np.ndarray], lengths: np.ndarray, buckets: int
) -> tuple[tuple[float, ...], tuple[float, ...]]:
    """Edges (quantiles of ``lengths``, repeated ones merged) and the best weight of each bucket.

    ``per_weight[w]``: each validation user's NDCG@10 with weight ``w`` (the users of ``lengths``, in order).
    Buckets hold disjoint users, so each bucket's weight is chosen on its own users; ties go to the smaller w.
    """
    quantiles = np.quantile(lengths, [i / buckets for i in range(1, buckets)])
    edges = tuple(float(e) for e in np.unique(quantiles) if e < lengths.max())
    index = np.digitize(lengths, edges, right=True)
    chosen = []
    for bucket in range(len(edges) + 1):
        members = index == bucket
        means = {w: float(values[members].mean()) if members.any() else 0.0 for w, values in per_weight.items()}
        chosen.append(max(sorted(means), key=lambda w: means[w]))
    return edges, tuple(chosen)


def _validation_parts(model: HybridModel, ds: PreparedDataset) -> dict[int, tuple[np.ndarray, np.ndarray]]:
    users = [u for u in range(ds.n_users)]
    histories = [ds.example(u, "valid")[0] for u in users]
    parts: dict[int, tuple[np.ndarray, np.ndarray]] = {}
    for start in range(0, len(users), 256):
        hidden, text = model.users(ds, histories[start : start + 256])
        parts.update({u: (hidden[i], text[i]) for i, u in enumerate(users[start : start + 256])})
    return parts


def _held_out_probe(model: HybridModel, ds: PreparedDataset, held_out: np.ndarray) -> HybridModel:
    """``model`` with its text path refit without ``held_out`` items (same SASRec-CE, same ``w``/gate)."""
    base = refit_without_items(model.base, ds, held_out)
    text = base.item_vectors.astype(np.float32)
    # only the text side changes: SASRec's covariance stays; the grid maps new items with its own A
    return replace(model, base=base, text_items=text, cov_text=_covariance(text[model.trained]), log=[])


def train_hybrid(
    base: TrainedR2END, ds: PreparedDataset, config: HybridConfig, trainable: np.ndarray | None = None
) -> HybridModel:
    """Combine a trained text path with SASRec-CE of the same data; ``w`` then ``b`` chosen on validation."""
    from training.models.sasrec import load_net
    from training.r2end.collaborative import sasrec_checkpoint

    trained = np.ones(ds.n_items, dtype=bool) if trainable is None else trainable.copy()
    path = sasrec_checkpoint(ds, ~trained) if config.sasrec_checkpoint == "auto" else config.sasrec_checkpoint
    net = load_net(path, ds.n_items, ds.split_hash, ~trained)
    sasrec_items = net.items.weight[1:].detach().numpy()
    text_items = base.item_vectors.astype(np.float32)
    model = HybridModel(
        base,
        net,
        config,
        trained,
        text_items,
        *fit_parts(sasrec_items, text_items, trained, config.ridge),
        name=f"{base.name}-hybrid",
    )
    parts = _validation_parts(model, ds)
    warm_items = model.item_vectors
    per_weight: dict[float, np.ndarray] = {}
    for weight in config.weights:
        result = evaluate(_Fixed("hybrid", parts, model, warm_items, weight, 0.0), ds, "valid")
        per_weight[weight] = np.asarray(result.per_user["NDCG@10"])
        ndcg = result.metrics["NDCG@10"]
        model.log.append({"stage": "weight", "w": weight, "valid_NDCG@10": round(ndcg, 5)})
        log.info("R2END-Hybrid: w=%s valid NDCG@10 %.4f", weight, ndcg)
    model.weight = max((row for row in model.log if row["stage"] == "weight"), key=lambda row: row["valid_NDCG@10"])["w"]
    if config.weight_gate == "history-length":
        lengths = np.array([len(ds.example(u, "valid")[0]) for u in result.users])
        model.length_edges, model.length_weights = choose_length_gate(per_weight, lengths, config.gate_buckets)
        ndcg = evaluate(_Fixed("hybrid", parts, model, warm_items, None, 0.0), ds, "valid", keep_per_user=False).metrics[
            "NDCG@10"
        ]
        model.log.append(
            {"stage": "gate", "edges": list(model.length_edges), "w": list(model.length_weights), "valid_NDCG@10": round(ndcg, 5)}
        )
        log.info("R2END-Hybrid: history-length gate %s, w %s: valid NDCG@10 %.4f", model.length_edges, model.length_weights, ndcg)
    rng = np.random.default_rng(config.seed)
    warm_rows = np.flatnonzero(trained)
    pseudo = np.zeros(ds.n_items, dtype=bool)
    pseudo[rng.choice(warm_rows, size=max(1, round(config.pseudo_new_share * len(warm_rows))), replace=False)] = True
    fitted_on = trained & ~pseudo
    valid_targets = {u: ds.example(u, "valid")[1] for u in parts}  # once: every grid point evaluates the same users

    def pseudo_targets(users: Sequence[int]) -> np.ndarray:
        """Which of these validation users have a pseudo-new target."""
        return np.array([pseudo[valid_targets[u]] for u in users])

    probe, probe_parts = model, parts
    if config.pseudo_new_projection == "held-out":
        probe = _held_out_probe(model, ds, pseudo | ~trained)
        model.log.append({"stage": "pseudo-new projection", **probe.base.report.get("refit_without_items", {"refit": False})})
        probe_parts = _validation_parts(probe, ds)
    probe_text = probe.text_items
    pseudo_map = fit_text_to_sasrec(probe_text[fitted_on], sasrec_items[fitted_on], config.ridge)
    for scale in config.new_item_text_scales:
        pseudo_items = item_vectors(sasrec_items, probe_text, pseudo | ~trained, pseudo_map, scale)
        for bias in config.new_item_biases:
            result = evaluate(_Fixed("hybrid", probe_parts, probe, pseudo_items, None, bias), ds, "valid")
            targets = pseudo_targets(result.users)
            hits = np.asarray(result.per_user["HR@10"])
            ndcg = np.asarray(result.per_user["NDCG@10"])
            entry = {
                "stage": "new items",
                "c": scale,
                "b": bias,
                "valid_NDCG@10": round(result.metrics["NDCG@10"], 5),
                "pseudo_new_target_HR@10": round(float(hits[targets].mean()), 5) if targets.any() else None,
                "warm_target_HR@10": round(float(hits[~targets].mean()), 5),
                "warm_target_NDCG@10": round(float(ndcg[~targets].mean()), 5),
            }
            model.log.append(entry)
            log.info("R2END-Hybrid: %s", entry)
    candidates = [row for row in model.log if row["stage"] == "new items"]
    floor = None
    if config.new_item_rule == "keep-warm":
        # SASRec-CE alone, new items last
        alone = evaluate(_Fixed("sasrec", probe_parts, probe, pseudo_items, 0.0, -1e6), ds, "valid")
        targets = pseudo_targets(alone.users)
        floor = round(float(np.asarray(alone.per_user["NDCG@10"])[~targets].mean()), 5)
        model.log.append({"stage": "warm floor", "sasrec_warm_target_NDCG@10": floor})
    elif config.new_item_rule == "reach":
        # pseudo-new items scored like any other, by text alone
        alone = evaluate(_TextAlone(probe_parts, probe_text), ds, "valid")
        targets = pseudo_targets(alone.users)
        if targets.any():
            reach = float(np.asarray(alone.per_user["HR@10"])[targets].mean())
            floor = round(config.reach_share * reach, 5)
            model.log.append({"stage": "reach floor", "text_pseudo_new_target_HR@10": round(reach, 5), "floor": floor})
    chosen = choose_new_item_form(candidates, config.new_item_rule, floor)
    model.text_scale, model.bias = chosen["c"], chosen["b"]
    log.info(
        "R2END-Hybrid: chose w=%s, c=%s, b=%s on validation (%d pseudo-new items)",
        model.length_weights or model.weight,
        model.text_scale,
        model.bias,
        int(pseudo.sum()),
    )
    return model
