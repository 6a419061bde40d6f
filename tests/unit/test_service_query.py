"""Serving's history rule (time order, then each item's first event) against training's deduplication (issue #13.2)."""

from __future__ import annotations

import random

from index.verbalize import HistoryEvent
from service.query import chronological, first_occurrences
from training.data.preprocess import deduplicate
from training.data.schema import Interaction

DAY = 86_400
START = 881_250_949


def test_first_occurrences_match_training_deduplication():
    """Serving's rule (time order, then each item's first event) = training's (earliest pair kept, then time order)."""
    rng = random.Random(7)
    for _ in range(300):
        n = rng.randint(1, 40)
        raw = [
            Interaction("u", f"i{rng.randint(0, 12)}", rng.choice([START, START + DAY, START + rng.randint(0, 90) * DAY]))
            for _ in range(n)
        ]
        kept, _dropped = deduplicate(raw)
        trained = [(i.item_id, i.timestamp) for i in sorted(kept, key=lambda i: i.timestamp)]  # prepare() sorts stably by time
        served = first_occurrences(chronological([HistoryEvent(i.item_id, i.timestamp) for i in raw]))
        assert [(e.item_id, e.timestamp) for e in served] == trained


def test_first_occurrences_without_timestamps_keep_the_order_given():
    events = [HistoryEvent("a"), HistoryEvent("b"), HistoryEvent("a"), HistoryEvent("c"), HistoryEvent("b")]
    assert [e.item_id for e in first_occurrences(chronological(events))] == ["a", "b", "c"]
