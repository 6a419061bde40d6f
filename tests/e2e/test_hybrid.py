"""R2END-Hybrid's algebra: the inner product is the per-user standardised sum it claims to be (the SASRec input rule and the
bundle arrays without torch: tests/unit/test_hybrid_bundle.py)."""

from __future__ import annotations

import numpy as np
import pytest

from index.hybrid import apply_map, item_vectors, user_vectors
from training.r2end.hybrid import _covariance, choose_length_gate, choose_new_item_form, fit_parts, fit_text_to_sasrec


def _parts(seed: int = 0, users: int = 7, items: int = 40, h: int = 6, d: int = 5):
    rng = np.random.default_rng(seed)
    return (
        rng.normal(size=(users, h)).astype(np.float32),
        rng.normal(size=(users, d)).astype(np.float32),
        rng.normal(size=(items, h)).astype(np.float32),
        rng.normal(size=(items, d)).astype(np.float32),
    )


def test_warm_scores_are_the_standardised_sum_up_to_a_per_user_scale():
    hidden, text, sas_items, text_items = _parts()
    new = np.zeros(len(sas_items), dtype=bool)
    mapping = fit_text_to_sasrec(text_items, sas_items, 1.0)
    w = 0.3
    scores = (
        user_vectors(hidden, text, _covariance(sas_items), _covariance(text_items), w, 2.0)
        @ item_vectors(sas_items, text_items, new, mapping).T
    )
    s_sas, s_text = hidden @ sas_items.T, text @ text_items.T
    sd_sas, sd_text = s_sas.std(1, ddof=1, keepdims=True), s_text.std(1, ddof=1, keepdims=True)
    fused = (s_sas - s_sas.mean(1, keepdims=True)) / sd_sas + w * (s_text - s_text.mean(1, keepdims=True)) / sd_text
    # score = sd_sas * (fused + per-user constant): the same ranking for every user
    recovered = scores / sd_sas
    np.testing.assert_allclose(
        recovered - recovered.mean(1, keepdims=True), fused - fused.mean(1, keepdims=True), rtol=1e-4, atol=1e-4
    )
    assert (np.argsort(-scores, 1) == np.argsort(-fused, 1)).all()


def test_weight_zero_is_sasrec_alone():
    hidden, text, sas_items, text_items = _parts(1)
    vectors = item_vectors(
        sas_items, text_items, np.zeros(len(sas_items), dtype=bool), fit_text_to_sasrec(text_items, sas_items, 1.0)
    )
    scores = user_vectors(hidden, text, _covariance(sas_items), _covariance(text_items), 0.0, 3.0) @ vectors.T
    np.testing.assert_allclose(scores, hidden @ sas_items.T, rtol=1e-5, atol=1e-5)


def test_new_items_use_the_mapped_embedding_plus_the_bias_in_spread_units():
    hidden, text, sas_items, text_items = _parts(2)
    new = np.zeros(len(sas_items), dtype=bool)
    new[[3, 11]] = True
    mapping = fit_text_to_sasrec(text_items[~new], sas_items[~new], 1.0)
    cov_cf, cov_text = _covariance(sas_items[~new]), _covariance(text_items[~new])
    b, w = 1.5, 0.2
    vectors = item_vectors(sas_items, text_items, new, mapping)
    assert (vectors[new, : sas_items.shape[1]] != sas_items[new]).all()  # a new item's own SASRec row is never read
    with_bias = user_vectors(hidden, text, cov_cf, cov_text, w, b) @ vectors.T
    without = user_vectors(hidden, text, cov_cf, cov_text, w, 0.0) @ vectors.T
    sd = np.sqrt(np.einsum("ij,jk,ik->i", hidden, cov_cf, hidden))
    np.testing.assert_allclose((with_bias - without)[:, new], b * np.repeat(sd[:, None], 2, 1), rtol=1e-4)
    np.testing.assert_allclose((with_bias - without)[:, ~new], 0.0, atol=1e-5)


def test_held_out_items_enter_neither_the_map_nor_the_covariances():
    """A leak test: whatever the held-out rows hold (SASRec's untrained rows, their text), the fitted parts are the same."""
    _, _, sas_items, text_items = _parts(4)
    trained = np.ones(len(sas_items), dtype=bool)
    trained[[0, 5, 9]] = False
    before = fit_parts(sas_items, text_items, trained, 1.0)
    sas_items[~trained], text_items[~trained] = 1e3, -1e3
    after = fit_parts(sas_items, text_items, trained, 1.0)
    for a, b in zip(before, after, strict=True):
        np.testing.assert_array_equal(a, b)
    assert not np.array_equal(
        fit_parts(sas_items, text_items, np.ones(len(sas_items), dtype=bool), 1.0)[0], before[0]
    )  # the rows would matter


def test_the_text_to_sasrec_map_recovers_a_linear_relation():
    rng = np.random.default_rng(3)
    text = rng.normal(size=(200, 5))
    true = rng.normal(size=(5, 4))
    mapping = fit_text_to_sasrec(text.astype(np.float32), (text @ true + 0.5).astype(np.float32), ridge=1e-6)
    np.testing.assert_allclose(apply_map(mapping, text.astype(np.float32)), text @ true + 0.5, atol=1e-3)


def test_a_checkpoint_of_another_split_or_other_held_out_items_is_refused(tmp_path):
    import torch

    from training.models.sasrec import SASRecConfig, SASRecNet, load_net

    config = SASRecConfig(hidden=8, layers=1, heads=1, max_len=5)
    net = SASRecNet(10, config)
    torch.save(
        {"identity": {"config": config.identity(), "split": "abc", "held_out": [2]}, "net": net.state_dict(), "best_state": None},
        tmp_path / "c.pt",
    )
    held = np.zeros(10, dtype=bool)
    held[2] = True
    assert load_net(tmp_path / "c.pt", 10, "abc", held).items.weight.shape == (11, 8)
    with pytest.raises(ValueError, match="another split"):
        load_net(tmp_path / "c.pt", 10, "xyz", held)
    with pytest.raises(ValueError, match="held out 1 items, this data holds out 0"):
        load_net(tmp_path / "c.pt", 10, "abc", None)


def test_the_length_gate_chooses_each_buckets_weight_on_its_own_users():
    lengths = np.array([2, 3, 4, 10, 11, 12, 50, 60, 70])
    # short histories do best without text, long ones with w = 1, the middle with w = 0.5
    per_weight = {
        0.0: np.array([0.9, 0.9, 0.9, 0.1, 0.1, 0.1, 0.1, 0.1, 0.1]),
        0.5: np.array([0.2, 0.2, 0.2, 0.8, 0.8, 0.8, 0.3, 0.3, 0.3]),
        1.0: np.array([0.1, 0.1, 0.1, 0.2, 0.2, 0.2, 0.7, 0.7, 0.7]),
    }
    edges, weights = choose_length_gate(per_weight, lengths, 3)
    assert len(edges) == 2 and 4 < edges[0] < 10 and 12 < edges[1] < 50 and weights == (0.0, 0.5, 1.0)
    # every user with the same length: one bucket, the overall best weight
    assert choose_length_gate(per_weight, np.full(9, 7), 3) == ((), (0.5,))


def _row(c: float, b: float, ndcg: float, hits: float | None, warm: float) -> dict:
    return {
        "stage": "new items",
        "c": c,
        "b": b,
        "valid_NDCG@10": ndcg,
        "pseudo_new_target_HR@10": hits,
        "warm_target_NDCG@10": warm,
    }


# the trade the ML-100K validation showed: a higher b finds new items and costs warm accuracy
_GRID = [
    _row(1.0, 0.0, 0.120, 0.00, 0.125),
    _row(1.0, 0.5, 0.122, 0.03, 0.124),
    _row(1.0, 0.7, 0.119, 0.07, 0.118),
    _row(1.0, 1.0, 0.105, 0.17, 0.100),
]


def test_keep_warm_takes_the_most_new_item_hits_that_keep_sasrecs_warm_accuracy():
    assert choose_new_item_form(_GRID, "keep-warm", 0.124)["b"] == 0.5
    # no row keeps the floor: the best NDCG@10, not the most hits
    assert choose_new_item_form(_GRID, "keep-warm", 0.2)["b"] == 0.5


def test_reach_takes_the_best_ndcg_that_keeps_the_text_paths_reach():
    assert choose_new_item_form(_GRID, "reach", 0.9 * 0.07)["b"] == 0.7
    assert choose_new_item_form(_GRID, "reach", 0.9 * 0.02)["b"] == 0.5
    # a reach no row keeps: the most new-item hits, the nearest to what was asked
    assert choose_new_item_form(_GRID, "reach", 0.5)["b"] == 1.0


def test_without_pseudo_new_targets_every_rule_falls_back_to_the_best_ndcg():
    assert choose_new_item_form(_GRID, "ndcg", None)["b"] == 0.5
    assert choose_new_item_form(_GRID, "reach", None)["b"] == 0.5
    assert choose_new_item_form(_GRID, "keep-warm", None)["b"] == 0.5
