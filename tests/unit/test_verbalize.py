"""The verbaliser: history selection (60-day window, 8 items, fallback) and the text formats.

That training, export, the service and the generative baseline all make the same text from a bundle:
tests/e2e/test_verbaliser_bundle.py.
"""

from __future__ import annotations

import pytest
from pydantic import ValidationError

from index.catalog import Catalog, ItemMeta
from index.verbalize import HistoryEvent, Verbaliser, format_date, item_document, item_text, target_text

DAY = 86_400
T0 = 1_600_000_000  # 2020-09-13 12:26:40 UTC


def at_days(*days: float, prefix: str = "i") -> list[HistoryEvent]:
    return [HistoryEvent(f"{prefix}{n}", int(T0 + d * DAY)) for n, d in enumerate(days)]


def ids(events: list[HistoryEvent]) -> list[str]:
    return [e.item_id for e in events]


PAPER = Verbaliser()


def select_history(events, reference_time: int | None = None, **fields):
    return Verbaliser(**fields).select(events, reference_time)


def test_defaults():
    assert (PAPER.max_items, PAPER.window_days, PAPER.format) == (8, 60, "dated-lines")


# --------------------------------------------------------------------------- selection


def test_window_is_relative_to_latest_history_event():
    events = at_days(0, 10, 50, 100, 149, 150)
    # latest is day 150: the window starts at day 90
    assert ids(select_history(events)) == ["i3", "i4", "i5"]


def test_window_boundary_is_inclusive():
    events = at_days(0, 30, 90, 150)
    events.insert(2, HistoryEvent("just-outside", T0 + 90 * DAY - 1))
    assert ids(select_history(events)) == ["i2", "i3"]  # day 90 exactly is in, one second earlier is out
    assert ids(select_history(events, window_days=120)) == ["i1", "just-outside", "i2", "i3"]


def test_at_most_eight_most_recent():
    events = at_days(*range(0, 24, 2))  # 12 events over 22 days
    chosen = select_history(events)
    assert ids(chosen) == [f"i{n}" for n in range(4, 12)]
    assert ids(select_history(events, max_items=3)) == ["i9", "i10", "i11"]


def test_single_most_recent_when_window_is_empty_for_explicit_reference():
    events = at_days(0, 10, 20)
    # a reference 100 days after the last event: nothing within 60 days of it
    assert ids(select_history(events, reference_time=T0 + 120 * DAY)) == ["i2"]
    # a reference inside the history: later events are not shown
    assert ids(select_history(events, reference_time=T0 + 15 * DAY)) == ["i0", "i1"]
    # a reference in a gap: the most recent event before it
    events = at_days(0, 10, 200)
    assert ids(select_history(events, reference_time=T0 + 150 * DAY)) == ["i1"]


def test_isolated_latest_event_alone():
    # without a reference the latest event is always in its own window
    events = at_days(0, 5, 300)
    assert ids(select_history(events)) == ["i2"]


def test_no_timestamps_last_eight():
    events = [HistoryEvent(f"m{n}") for n in range(11)]
    assert ids(select_history(events)) == [f"m{n}" for n in range(3, 11)]
    # one missing timestamp disables the window for the whole history
    mixed = at_days(0, 1, 200) + [HistoryEvent("undated")]
    assert ids(select_history(mixed)) == ["i0", "i1", "i2", "undated"]


def test_window_none_and_empty():
    events = at_days(*range(0, 1000, 100))
    assert ids(select_history(events, window_days=None)) == ids(events[-8:])
    assert select_history([]) == []


# --------------------------------------------------------------------------- text


CATALOG = Catalog(
    [
        ItemMeta("1", "Toy Story", ("Animation", "Children's", "Comedy"), year=1995),
        ItemMeta("2", "GoldenEye (1995)", ("Action",), year=1995),
        ItemMeta(
            "B00004U9V2",
            "Hand Therapy",
            ("Skin Care", "Hand Creams"),
            brand="Crabtree & Evelyn",
            price=30.0,
            description="ignored here",
        ),
        ItemMeta("B000FI4S1E", ""),
        ItemMeta("x", "   ", year=2001),
        ItemMeta("yelp1", "Target", extra=(("location", "Tucson, AZ"),)),
    ]
)


def test_item_text_format():
    assert item_text(CATALOG["1"]) == "Toy Story (1995); Categories: Animation, Children's, Comedy"
    assert item_text(CATALOG["2"]) == "GoldenEye (1995); Categories: Action"  # year already in the title
    assert item_text(CATALOG["B00004U9V2"]) == "Hand Therapy; Categories: Skin Care, Hand Creams; Brand: Crabtree & Evelyn"
    assert item_text(CATALOG["B000FI4S1E"]) == "B000FI4S1E"  # no title: the id stands in
    assert item_text(CATALOG["x"]) == "x (2001)"
    assert item_text(CATALOG["yelp1"]) == "Target"


def test_format_date_is_utc():
    assert format_date(0) == "1970-01-01"
    assert format_date(T0) == "2020-09-13"
    assert format_date(1531001351) == "2018-07-07"  # 22:09:11 UTC: still the 7th, in UTC
    assert format_date(1530999000 + 3 * 3600) == "2018-07-08"


def test_history_text_lines():
    events = [
        HistoryEvent("B000FI4S1E", T0 - 400 * DAY),  # outside the window
        HistoryEvent("1", T0 - 30 * DAY),
        HistoryEvent("B00004U9V2", T0),
    ]
    text = PAPER.history_text(events, CATALOG.__getitem__)
    assert text == (
        "2020-08-14: Toy Story (1995); Categories: Animation, Children's, Comedy\n"
        "2020-09-13: Hand Therapy; Categories: Skin Care, Hand Creams; Brand: Crabtree & Evelyn"
    )


def test_history_text_without_dates():
    events = [HistoryEvent(i) for i in ("1", "2", "B000FI4S1E")]
    assert PAPER.history_text(events, CATALOG.__getitem__) == (
        "Toy Story (1995); Categories: Animation, Children's, Comedy\nGoldenEye (1995); Categories: Action\nB000FI4S1E"
    )
    assert PAPER.history_text([], CATALOG.__getitem__) == ""


def test_target_text_and_item_document():
    item = CATALOG["1"]
    assert target_text("  The user likes animated family films.\n", item) == (
        "The user likes animated family films.\nToy Story (1995); Categories: Animation, Children's, Comedy"
    )
    assert (
        item_document(" A toy comes to life. ", item)
        == "A toy comes to life.\nToy Story (1995); Categories: Animation, Children's, Comedy"
    )
    assert item_document(None, item) == item_text(item)
    assert item_document("  \n", item) == item_text(item)


def test_lines_format_leaves_out_the_dates():
    events = [HistoryEvent("1", T0 - 30 * DAY), HistoryEvent("2", T0)]
    assert Verbaliser(format="lines").history_text(events, CATALOG.__getitem__) == (
        "Toy Story (1995); Categories: Animation, Children's, Comedy\nGoldenEye (1995); Categories: Action"
    )


# --------------------------------------------------------------------------- one verbaliser object


def test_verbaliser_is_frozen_and_strict():
    with pytest.raises(ValidationError):
        PAPER.max_items = 3  # type: ignore[misc]
    for bad in ({"max_items": 0}, {"window_days": -1}, {"format": "csv"}, {"max_item": 3}):
        with pytest.raises(ValidationError):
            Verbaliser(**bad)


def test_manifests_written_before_the_format_field_still_load():
    """Bundles from before had ``{"max_items", "window_days"}`` and were written with dated lines."""
    assert Verbaliser.model_validate({"max_items": 8, "window_days": 60}) == PAPER


def test_training_config_holds_the_verbaliser_and_the_teacher_keeps_the_papers():
    from training.r2end.config import R2ENDConfig
    from training.teacher.tasks import PROMPT_VERBALISER

    assert R2ENDConfig().verbaliser == PAPER == PROMPT_VERBALISER
    custom = R2ENDConfig(verbaliser={"max_items": 3, "format": "lines"})
    assert custom.verbaliser == Verbaliser(max_items=3, window_days=60, format="lines")
    assert R2ENDConfig(**custom.model_dump()).verbaliser == custom.verbaliser  # survives the run.json / manifest round trip
