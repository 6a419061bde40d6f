"""Checks of a whole dataset that no single line can fail: what ``r2end data add`` refuses or warns about.

A loader already stops at the first bad line (file, line, field). What is left is the data as a
whole: no interactions, no item with any metadata (the text path would embed bare ids; usually
the id columns of the two files do not match), nothing left after the k-core filter and the
leave-one-out split. Those are errors. Some items without metadata is a warning that names the
first interaction with one; every row dropped is counted in the dataset's report.
"""

from __future__ import annotations

from training.data.preprocess import MIN_SEQUENCE, PreparedDataset
from training.data.schema import DataFormatError, RawDataset


def check_raw(raw: RawDataset) -> list[str]:
    """Raise :class:`DataFormatError` for raw data that cannot be trained on; return warnings for the rest."""
    where = raw.interactions_file or raw.name
    if not raw.interactions:
        raise DataFormatError(where, 0, None, "no interactions")
    without = {i.item_id for i in raw.interactions} - raw.items.keys()
    if not without:
        return []
    first = next(i for i in raw.interactions if i.item_id in without)
    events = sum(1 for i in raw.interactions if i.item_id in without)
    items_file = raw.items_file or "the item file"
    if not raw.items:
        raise DataFormatError(
            raw.items_file or where,
            0,
            None,
            "no item metadata (file missing or empty): the text path needs a title or categories per item",
        )
    if len(without) == len({i.item_id for i in raw.interactions}):
        raise DataFormatError(
            where,
            first.line,
            raw.item_field,
            f"none of the {len(without):,} items has metadata in {items_file} (first: {first.item_id!r}): "
            f"do the item ids of the two files match?",
        )
    return [
        (
            f"{where}:{first.line}: field {raw.item_field!r}: item {first.item_id!r} has no metadata in {items_file} "
            f"({len(without):,} items, {events:,} interactions like this; kept with the id as their only text, unless the k-core filter drops them)"
        )
    ]


def check_prepared(ds: PreparedDataset, raw: RawDataset, k: int) -> list[str]:
    """Raise ValueError when nothing is left to train on; return warnings about users dropped for leave-one-out."""
    where = raw.interactions_file or raw.name
    core = next((n for key, n in ds.report.items() if key.startswith(f"dropped: {k}-core")), 0)
    if ds.n_users == 0:
        raise ValueError(
            f"{where}: no user has {max(k, MIN_SEQUENCE)} or more events after the {k}-core filter "
            f"({core:,} of {ds.report.get('raw interactions', 0):,} interactions dropped by it); "
            f"leave-one-out needs {MIN_SEQUENCE} per user: give more data or a smaller --k"
        )
    short = ds.report.get("dropped: users too short for a leave-one-out split", 0)
    if short:
        return [
            (
                f"{where}: {short:,} users have fewer than {MIN_SEQUENCE} events after the {k}-core filter and were dropped "
                f"(leave-one-out needs a training, a validation and a test event)"
            )
        ]
    return []
