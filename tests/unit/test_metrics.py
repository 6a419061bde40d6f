"""Tie-aware HR/NDCG against brute force, and the evaluator's masking and coverage."""

from __future__ import annotations

import itertools
import math

import numpy as np
import pytest

from training.data.preprocess import prepare
from training.data.schema import Interaction, RawDataset
from training.evaluation.evaluator import evaluate
from training.evaluation.metrics import expected_hit, expected_ndcg, greater_and_ties


def brute_force(scores: np.ndarray, target: int, k: int) -> tuple[float, float]:
    """Average HR@k and NDCG@k over every permutation used as the tie-breaker."""
    n = len(scores)
    hit = ndcg = 0.0
    perms = list(itertools.permutations(range(n)))
    for priority in perms:
        order = sorted(range(n), key=lambda i: (-scores[i], priority[i]))
        pos = order.index(target)
        if pos < k:
            hit += 1.0
            ndcg += 1.0 / math.log2(pos + 2)
    return hit / len(perms), ndcg / len(perms)


def test_greater_and_ties():
    scores = np.array([[3.0, 1.0, 3.0, 2.0, 3.0], [0.0, 0.0, 0.0, 0.0, 0.0], [5.0, -np.inf, 1.0, -np.inf, 0.0]])
    greater, ties = greater_and_ties(scores, np.array([3, 1, 4]))
    assert greater.tolist() == [3, 0, 2]
    assert ties.tolist() == [0, 4, 0]
    # a target scored -inf ties with masked items no more: it is a miss (see test_leakage.py)
    greater, ties = greater_and_ties(scores[2:], np.array([1]))
    assert expected_hit(greater, ties, 10).tolist() == [0.0]


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_expected_metrics_match_brute_force(seed):
    rng = np.random.default_rng(seed)
    n_rows, n_items = 12, 6
    scores = rng.integers(0, 3, size=(n_rows, n_items)).astype(float)  # three levels: many ties
    scores[0] = 1.0  # everything tied
    scores[1, :3] = -np.inf  # masked items tie among themselves
    targets = rng.integers(0, n_items, size=n_rows)
    targets[1] = 4
    greater, ties = greater_and_ties(scores, targets)
    for k in range(1, n_items + 2):
        hits = expected_hit(greater, ties, k)
        ndcgs = expected_ndcg(greater, ties, k)
        for row in range(n_rows):
            want_hit, want_ndcg = brute_force(scores[row], int(targets[row]), k)
            assert hits[row] == pytest.approx(want_hit, abs=1e-12), (seed, k, row)
            assert ndcgs[row] == pytest.approx(want_ndcg, abs=1e-12), (seed, k, row)


def test_all_tied_is_chance_level():
    n = 100
    greater, ties = greater_and_ties(np.zeros((1, n)), np.array([17]))
    assert expected_hit(greater, ties, 10)[0] == pytest.approx(10 / n)
    assert expected_ndcg(greater, ties, 10)[0] == pytest.approx(sum(1 / math.log2(p + 2) for p in range(10)) / n)


def test_expected_metrics_monte_carlo_large_ties():
    rng = np.random.default_rng(7)
    n_items, k, samples = 60, 10, 20000
    scores = rng.integers(0, 4, size=n_items).astype(float)
    target = int(np.flatnonzero(scores == 3.0)[0])  # top level: its tie group straddles k
    greater, ties = greater_and_ties(scores[None, :], np.array([target]))
    hits = ndcg = 0.0
    for _ in range(samples):
        tiebreak = rng.random(n_items)
        order = np.lexsort((tiebreak, -scores))
        pos = int(np.flatnonzero(order == target)[0])
        if pos < k:
            hits += 1
            ndcg += 1 / math.log2(pos + 2)
    assert 0 < hits < samples  # the case really straddles the cut-off
    assert expected_hit(greater, ties, k)[0] == pytest.approx(hits / samples, abs=0.01)
    assert expected_ndcg(greater, ties, k)[0] == pytest.approx(ndcg / samples, abs=0.01)


def test_strict_ranks_are_exact():
    greater = np.array([0, 3, 9, 10, 50])
    ties = np.zeros(5, dtype=int)
    assert expected_hit(greater, ties, 10).tolist() == [1, 1, 1, 0, 0]
    assert expected_ndcg(greater, ties, 10).tolist() == pytest.approx([1, 1 / math.log2(5), 1 / math.log2(11), 0, 0])


# --------------------------------------------------------------------------- evaluator


def dataset(sequences: dict[str, list[int]], n_items: int):
    """A prepared dataset whose item ids are i00, i01, ... so that row == number."""
    events = [Interaction(u, f"i{item:02d}", t) for u, items in sequences.items() for t, item in enumerate(items)]
    ds = prepare(RawDataset("toy", {}, events), k=1)
    assert ds.catalog.ids == [f"i{n:02d}" for n in range(n_items)]
    return ds


SEQUENCES = {
    "u0": [0, 1, 2, 3, 4, 5, 6, 7],
    "u1": [19, 18, 17, 16, 15, 14, 13, 12],
    "u2": [3, 9, 15, 1, 11],
    "u3": [2, 4, 6],
    "u4": [8, 10, 5],
}


class HistoryLover:
    """Scores its input history highest, the true target next, everything else 0."""

    name = "history-lover"

    def __init__(self, stage: str):
        self.stage = stage

    def score(self, ds, users, histories):
        scores = np.zeros((len(users), ds.n_items))
        for row, (user, history) in enumerate(zip(users, histories, strict=True)):
            scores[row, ds.example(user, self.stage)[1]] = 50.0
            scores[row, [item for item, _ in history]] = 100.0
        return scores


class ByRow:
    """A fixed ranking: lower rows first."""

    name = "by-row"

    def score(self, ds, users, histories):
        return np.tile(-np.arange(ds.n_items, dtype=float), (len(users), 1))


@pytest.mark.parametrize("stage", ["test", "valid"])
def test_history_items_are_masked(stage):
    ds = dataset(SEQUENCES, 20)
    masked = evaluate(HistoryLover(stage), ds, stage=stage)
    assert masked.mask_history
    for name in ("HR@5", "HR@10", "NDCG@5", "NDCG@10"):
        assert masked.metrics[name] == pytest.approx(1.0), name
    unmasked = evaluate(HistoryLover(stage), ds, stage=stage, mask_history=False)
    assert not unmasked.mask_history
    history_lengths = [len(ds.example(u, stage)[0]) for u in range(ds.n_users)]
    assert history_lengths == ([7, 7, 4, 2, 2] if stage == "test" else [6, 6, 3, 1, 1])
    assert unmasked.metrics["HR@5"] == pytest.approx(np.mean([g < 5 for g in history_lengths]))
    assert unmasked.metrics["NDCG@10"] == pytest.approx(np.mean([1 / math.log2(g + 2) for g in history_lengths]))
    assert unmasked.metrics["HR@5"] < 1.0


def test_masked_history_does_not_count_as_competition():
    ds = dataset(SEQUENCES, 20)

    class TargetTiedWithRest(HistoryLover):
        def score(self, ds, users, histories):
            scores = np.zeros((len(users), ds.n_items))
            for row, history in enumerate(histories):
                scores[row, [item for item, _ in history]] = 100.0
            return scores

    result = evaluate(TargetTiedWithRest("test"), ds, batch_size=2)
    # the target ties with every item outside the history: chance among those
    expected = [min(1.0, 10 / (20 - len(ds.example(u, "test")[0]))) for u in range(ds.n_users)]
    assert result.metrics["HR@10"] == pytest.approx(np.mean(expected))
    assert result.per_user["HR@10"] == pytest.approx([round(x, 5) for x in expected])


def test_coverage_at_10():
    ds = dataset(SEQUENCES, 20)
    unmasked = evaluate(ByRow(), ds, mask_history=False)
    assert unmasked.metrics["coverage@10"] == pytest.approx(0.5)  # rows 0..9 for everyone
    masked = evaluate(ByRow(), ds, batch_size=3)
    union = set()
    for u in range(ds.n_users):
        seen = {item for item, _ in ds.example(u, "test")[0]}
        union.update([row for row in range(ds.n_items) if row not in seen][:10])
    assert masked.metrics["coverage@10"] == pytest.approx(len(union) / 20) == pytest.approx(0.85)


def test_small_catalog_coverage_ignores_masked_items():
    ds = dataset({"u": [0, 1, 2], "v": [0, 2, 3], "w": [0, 3, 1]}, 4)
    result = evaluate(ByRow(), ds)
    # item 0 is in every history, so it is never recommended
    assert result.metrics["coverage@10"] == pytest.approx(0.75)
    assert evaluate(ByRow(), ds, mask_history=False).metrics["coverage@10"] == pytest.approx(1.0)
    assert result.metrics["HR@10"] == pytest.approx(1.0)


def test_wrong_score_shape_is_an_error():
    ds = dataset(SEQUENCES, 20)

    class Short:
        name = "short"

        def score(self, ds, users, histories):
            return np.zeros((len(users), ds.n_items - 1))

    with pytest.raises(ValueError, match="short returned scores of shape"):
        evaluate(Short(), ds)


# --------------------------------------------------------------------------- same-second targets (issue #12)


def test_same_second_shares_count_tied_targets():
    from training.evaluation.ties import same_second_shares

    # (item, timestamp) per user; the last event is the test target, the one before the validation target
    raw = [("u0", [1, 2, 3, 4]), ("u1", [1, 2, 4, 4]), ("u2", [1, 3, 3, 3]), ("u3", [3, 1, 2, 3])]
    events = [Interaction(u, f"i{n:02d}", ts) for u, stamps in raw for n, ts in enumerate(stamps)]
    ds = prepare(RawDataset("toy", {}, events), k=1)
    assert [[ts for _, ts in seq] for seq in ds.sequences] == [[1, 2, 3, 4], [1, 2, 4, 4], [1, 3, 3, 3], [1, 2, 3, 3]]
    shares = same_second_shares(ds)
    assert shares["users"] == 4
    assert (shares["valid_test_users"], shares["valid_test_share"]) == (3, 0.75)
    assert (shares["last_three_users"], shares["last_three_share"]) == (1, 0.25)


def test_same_second_events_keep_file_order():
    # what the disclosure in RESULTS.md says: ties are ordered as the source file lists them
    events = [
        Interaction("u", "late-in-file", 5),
        Interaction("u", "first", 1),
        Interaction("u", "b", 5),
        Interaction("u", "a", 5),
    ]
    ds = prepare(RawDataset("toy", {}, events), k=1)
    assert [ds.catalog.at(row).item_id for row, _ in ds.sequences[0]] == ["first", "late-in-file", "b", "a"]
    assert ds.catalog.at(ds.example(0, "test")[1]).item_id == "a"
