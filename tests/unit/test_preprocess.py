"""k-core, deduplication, chronological order, the leave-one-out split and its hash (the real MovieLens counts:
tests/e2e/test_movielens.py)."""

from __future__ import annotations

import itertools

import pytest

from index.catalog import ItemMeta
from training.data.preprocess import deduplicate, k_core, natural_key, prepare
from training.data.schema import Interaction, RawDataset


def raw_from(events: list[tuple[str, str, int]], name: str = "toy", items: dict | None = None) -> RawDataset:
    interactions = [Interaction(u, i, t) for u, i, t in events]
    if items is None:
        items = {i: ItemMeta(i, f"Item {i}") for _, i, _ in events}
    return RawDataset(name, dict(items), interactions)


def pairs(kept: list[Interaction]) -> set[tuple[str, str]]:
    return {(i.user_id, i.item_id) for i in kept}


# --------------------------------------------------------------------------- k-core

# A dense 2-core of users A, B, C on items P, Q, R, plus a chain hanging off it:
# u2 has one event (on x); once u2 is gone, x has one event (u1's); once that is gone,
# u1 has one event (on P). A single filtering pass removes only u2's event.
CORE = [(u, i, n) for n, (u, i) in enumerate(itertools.product("ABC", "PQR"))]
CHAIN = [("u1", "P", 100), ("u1", "x", 101), ("u2", "x", 102)]


def test_k_core_iterates_until_stable():
    interactions = [Interaction(u, i, t) for u, i, t in CORE + CHAIN]
    # what one pass would keep: the chain is only partly removed
    users = {u for u, _, _ in CORE + CHAIN}
    one_pass = [
        e
        for e in interactions
        if sum(x.user_id == e.user_id for x in interactions) >= 2 and sum(x.item_id == e.item_id for x in interactions) >= 2
    ]
    assert ("u1", "x") in pairs(one_pass) and ("u1", "P") in pairs(one_pass)
    kept, rounds = k_core(interactions, 2)
    assert pairs(kept) == {(u, i) for u, i, _ in CORE}
    assert rounds == 4  # three rounds that drop something, one that confirms
    assert users - {e.user_id for e in kept} == {"u1", "u2"}
    # the result really is a 2-core
    for key in ("user_id", "item_id"):
        counts = {}
        for e in kept:
            counts[getattr(e, key)] = counts.get(getattr(e, key), 0) + 1
        assert min(counts.values()) >= 2


def test_k_core_keeps_order_and_no_change_is_one_round():
    interactions = [Interaction(u, i, t) for u, i, t in reversed(CORE)]
    kept, rounds = k_core(interactions, 3)
    assert kept == interactions and rounds == 1
    assert k_core(interactions, 4) == ([], 2)


def test_prepare_reports_k_core_rounds():
    ds = prepare(raw_from(CORE + CHAIN), k=2)
    assert ds.report["dropped: 2-core filter (4 rounds)"] == 3
    assert ds.users == ["A", "B", "C"]
    assert ds.catalog.ids == ["P", "Q", "R"]
    assert "x" not in ds.catalog


# --------------------------------------------------------------------------- deduplication


def test_deduplicate_keeps_earliest_not_first_in_file():
    events = [
        Interaction("u", "i", 50, rating=1.0),
        Interaction("u", "j", 10),
        Interaction("u", "i", 20, rating=5.0),
        Interaction("v", "i", 5),
    ]
    kept, dropped = deduplicate(events)
    assert dropped == 1
    assert kept == [events[1], events[2], events[3]]  # file order preserved among the kept


def test_deduplicate_equal_times_keep_first_in_file():
    events = [Interaction("u", "i", 7, rating=1.0), Interaction("u", "i", 7, rating=2.0), Interaction("u", "i", 9)]
    kept, dropped = deduplicate(events)
    assert kept == [events[0]] and dropped == 2


def test_prepare_dedupes_before_k_core():
    # u rates i twice: without dedupe u would have 3 events and survive a 3-core
    events = [("u", "i", 1), ("u", "i", 2), ("u", "j", 3)] + [
        (v, item, 10 + n) for n, (v, item) in enumerate(itertools.product("abc", "ij"))
    ]
    events += [(v, "k", 30) for v in "abc"]
    ds = prepare(raw_from(events), k=3)
    assert ds.report["dropped: repeated (user, item) pairs, earliest kept"] == 1
    assert "u" not in ds.users
    assert ds.users == ["a", "b", "c"]


# --------------------------------------------------------------------------- chronological order and ids


def test_sequences_are_chronological_with_stable_ties():
    events = [
        ("7", "10", 500),
        ("7", "2", 300),
        ("7", "30", 300),
        ("7", "4", 100),
        ("7", "5", 300),
        ("12", "30", 1),
        ("12", "2", 1),
        ("12", "4", 1),
        ("12", "5", 0),
        ("12", "10", 2),
    ]
    ds = prepare(raw_from(events), k=1)
    # numeric ids sort numerically (not "10" < "2")
    assert ds.users == ["7", "12"]
    assert ds.catalog.ids == ["2", "4", "5", "10", "30"]
    ids = lambda u: [(ds.catalog.at(r).item_id, t) for r, t in ds.sequences[ds.users.index(u)]]
    # equal timestamps keep file order: 2, 30, 5 for user 7; 30, 2, 4 for user 12
    assert ids("7") == [("4", 100), ("2", 300), ("30", 300), ("5", 300), ("10", 500)]
    assert ids("12") == [("5", 0), ("30", 1), ("2", 1), ("4", 1), ("10", 2)]


def test_natural_key_mixed_ids():
    ids = ["b", "10", "A3", "2", "a", "1m_1"]
    assert sorted(ids, key=natural_key) == ["2", "10", "1m_1", "A3", "a", "b"]


def test_users_too_short_are_dropped():
    events = [("u", "i", 1), ("u", "j", 2), ("v", "i", 1), ("v", "j", 2), ("v", "k", 3)]
    ds = prepare(raw_from(events), k=1)
    assert ds.users == ["v"]
    assert ds.report["dropped: users too short for a leave-one-out split"] == 1


def test_prepare_does_not_change_the_raw_dataset():
    raw = raw_from([("u", "i", 1), ("u", "j", 2), ("u", "k", 3)], items={"i": ItemMeta("i", "Eye")})
    first = prepare(raw, k=1)
    assert set(raw.items) == {"i"}
    second = prepare(raw, k=1)
    assert first.report == second.report
    assert second.report["note: items without metadata (kept, id shown as title)"] == 2
    assert first.catalog["j"].title == "" and first.catalog["i"].title == "Eye"


def test_reviews_kept_for_kept_users():
    raw = RawDataset(
        "r",
        {},
        [
            Interaction("u", "i", 1, review="nice"),
            Interaction("u", "j", 2),
            Interaction("u", "k", 3, review="meh"),
            Interaction("v", "i", 4, review="x"),
        ],
    )
    ds = prepare(raw, k=1)
    assert ds.reviews == {("u", "i"): "nice", ("u", "k"): "meh"}


# --------------------------------------------------------------------------- leave-one-out


@pytest.fixture
def five():
    events = [("u", item, t) for item, t in zip("abcde", (10, 20, 30, 40, 50), strict=True)]
    events += [("v", item, t) for item, t in zip("edc", (1, 2, 3), strict=True)]
    return prepare(raw_from(events), k=1)


def test_example_stages(five):
    u = five.users.index("u")
    row = five.catalog.row
    seq = [(row(i), t) for i, t in zip("abcde", (10, 20, 30, 40, 50), strict=True)]
    assert five.sequences[u] == seq
    assert five.example(u, "train") == (seq[:2], row("c"))
    assert five.example(u, "valid") == (seq[:3], row("d"))
    assert five.example(u, "test") == (seq[:4], row("e"))
    assert five.train_sequence(u) == seq[:3]
    # the shortest allowed user: train has an empty history
    v = five.users.index("v")
    assert five.example(v, "train") == ([], row("e"))
    assert five.example(v, "test") == ([(row("e"), 1), (row("d"), 2)], row("c"))
    with pytest.raises(KeyError):
        five.example(u, "dev")


def test_history_events_and_popularity(five):
    u = five.users.index("u")
    history, _ = five.example(u, "test")
    assert [(e.item_id, e.timestamp) for e in five.history_events(history)] == [("a", 10), ("b", 20), ("c", 30), ("d", 40)]
    pop = dict(zip(five.catalog.ids, five.item_popularity("train"), strict=True))
    assert pop == {"a": 1, "b": 1, "c": 0, "d": 0, "e": 0}  # u: a, b; v: nothing before its first target
    pop_all = dict(zip(five.catalog.ids, five.item_popularity("all"), strict=True))
    assert pop_all == {"a": 1, "b": 1, "c": 2, "d": 2, "e": 2}


# --------------------------------------------------------------------------- split hash


def test_split_hash_tracks_the_data():
    events = [("u", i, t) for i, t in zip("abcd", (1, 2, 3, 4), strict=True)] + [
        ("v", i, t) for i, t in zip("dcb", (1, 2, 3), strict=True)
    ]
    base = prepare(raw_from(events), k=1).split_hash
    assert len(base) == 64
    assert prepare(raw_from(list(events)), k=1).split_hash == base
    changed_time = [(u, i, t + 1 if (u, i) == ("u", "d") else t) for u, i, t in events]
    assert prepare(raw_from(changed_time), k=1).split_hash != base
    changed_item = [(u, "z" if (u, i) == ("v", "b") else i, t) for u, i, t in events]
    assert prepare(raw_from(changed_item), k=1).split_hash != base
    swapped_order = [(u, i, {1: 2, 2: 1}.get(t, t) if u == "v" else t) for u, i, t in events]
    assert prepare(raw_from(swapped_order), k=1).split_hash != base
    assert prepare(raw_from(events, name="other"), k=1).split_hash != base
    assert prepare(raw_from(events + [("w", "a", 9)]), k=1).split_hash == base  # w is too short: same split
