"""Iterative k-core filtering, chronological ordering and the leave-one-out split."""

from __future__ import annotations

import hashlib
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from functools import cached_property

from index.catalog import Catalog, ItemMeta
from index.verbalize import HistoryEvent, Verbaliser
from training.data.schema import Interaction, RawDataset

DEFAULT_K = 5
"""The k-core every dataset gets unless its ``r2end data add --k`` says otherwise (the paper's 5-core)."""
MIN_SEQUENCE = 3
"""Events a user needs for leave-one-out: at least one to train on, a validation and a test target."""


def natural_key(value: str) -> tuple[int, int | str]:
    """Sort numeric ids numerically and the rest as strings, deterministically."""
    return (0, int(value)) if value.isdigit() else (1, value)


@dataclass
class PreparedDataset:
    """A k-cored dataset with each user's interactions in chronological order.

    ``sequences[u]`` lists ``(item_row, timestamp)`` for user ``users[u]``; item
    rows index ``catalog``. Leave-one-out: the last event is the test target,
    the second-to-last the validation target, the rest is training.
    """

    name: str
    catalog: Catalog
    users: list[str]
    sequences: list[list[tuple[int, int]]]
    reviews: dict[tuple[str, str], str] = field(default_factory=dict)
    report: dict[str, int] = field(default_factory=dict)

    @property
    def n_users(self) -> int:
        return len(self.users)

    @property
    def n_items(self) -> int:
        return len(self.catalog)

    @property
    def n_interactions(self) -> int:
        return sum(len(s) for s in self.sequences)

    def train_sequence(self, user: int) -> list[tuple[int, int]]:
        """Training part of a user's sequence (all but the last two events)."""
        return self.sequences[user][:-2]

    def example(self, user: int, stage: str) -> tuple[list[tuple[int, int]], int]:
        """``(history, target_row)`` for ``stage`` in train/valid/test.

        train: the last training event is the target, the earlier ones the history;
        valid: history = training part, target = second-to-last event;
        test: history = everything but the last event, target = the last event.
        """
        seq = self.sequences[user]
        cut = {"train": len(seq) - 3, "valid": len(seq) - 2, "test": len(seq) - 1}[stage]
        return seq[:cut], seq[cut][0]

    def history_events(self, history: list[tuple[int, int]]) -> list[HistoryEvent]:
        """History rows as :class:`HistoryEvent` for the verbaliser."""
        return [HistoryEvent(self.catalog.at(row).item_id, ts) for row, ts in history]

    def history_texts(self, histories: Sequence[list[tuple[int, int]]], verbaliser: Verbaliser) -> list[str]:
        """H_u of each history as ``verbaliser`` writes it (training's one way to verbalise)."""
        return [verbaliser.history_text(self.history_events(h), self.catalog.__getitem__) for h in histories]

    @cached_property
    def split_hash(self) -> str:
        """sha256 over the ordered sequences and ids: equal hash, equal split."""
        digest = hashlib.sha256()
        digest.update(self.name.encode())
        for user, seq in zip(self.users, self.sequences, strict=True):
            digest.update(user.encode() + b"\x00")
            for row, ts in seq:
                digest.update(f"{self.catalog.at(row).item_id}@{ts};".encode())
        return digest.hexdigest()

    def item_popularity(self, stage: str = "train") -> list[int]:
        """Interaction count per item row over the part of the data a model may see at ``stage``."""
        counts = [0] * self.n_items
        for u in range(self.n_users):
            history, _ = self.example(u, stage) if stage != "all" else (self.sequences[u], None)
            for row, _ts in history:
                counts[row] += 1
        return counts


def k_core(interactions: list[Interaction], k: int) -> tuple[list[Interaction], int]:
    """Iteratively keep users and items with at least ``k`` interactions. Returns (kept, rounds)."""
    rounds = 0
    while True:
        rounds += 1
        users = Counter(i.user_id for i in interactions)
        items = Counter(i.item_id for i in interactions)
        kept = [i for i in interactions if users[i.user_id] >= k and items[i.item_id] >= k]
        if len(kept) == len(interactions):
            return kept, rounds
        interactions = kept


def deduplicate(interactions: list[Interaction]) -> tuple[list[Interaction], int]:
    """Keep the earliest of repeated (user, item) pairs; return (kept, number dropped)."""
    ordered = sorted(range(len(interactions)), key=lambda n: interactions[n].timestamp)
    seen: set[tuple[str, str]] = set()
    keep = [False] * len(interactions)
    for n in ordered:
        pair = (interactions[n].user_id, interactions[n].item_id)
        if pair not in seen:
            seen.add(pair)
            keep[n] = True
    kept = [i for i, k in zip(interactions, keep, strict=True) if k]
    return kept, len(interactions) - len(kept)


def prepare(raw: RawDataset, k: int = DEFAULT_K, min_sequence: int = MIN_SEQUENCE) -> PreparedDataset:
    """Deduplicate, k-core, sort each user's events by time (ties keep file order) and index them."""
    report = {f"loader dropped: {reason}": n for reason, n in raw.dropped.items()}
    report.update({f"loader note: {what}": n for what, n in raw.notes.items()})
    report["raw interactions"] = len(raw.interactions)
    items = dict(raw.items)  # a copy: preparing never changes the raw dataset
    missing = sorted({i.item_id for i in raw.interactions} - items.keys())
    for item_id in missing:
        items[item_id] = ItemMeta(item_id=item_id, title="")
    if missing:
        report["note: items without metadata (kept, id shown as title)"] = len(missing)
    interactions, n_repeats = deduplicate(raw.interactions)
    report["dropped: repeated (user, item) pairs, earliest kept"] = n_repeats
    before = len(interactions)
    interactions, rounds = k_core(interactions, k)
    report[f"dropped: {k}-core filter ({rounds} rounds)"] = before - len(interactions)
    item_ids = sorted({i.item_id for i in interactions}, key=natural_key)
    catalog = Catalog(items[item_id] for item_id in item_ids)
    row_of = {item_id: row for row, item_id in enumerate(item_ids)}
    by_user: dict[str, list[tuple[int, int]]] = {}
    for event in interactions:  # file order within equal timestamps is preserved by the stable sort
        by_user.setdefault(event.user_id, []).append((row_of[event.item_id], event.timestamp))
    users = sorted((u for u, s in by_user.items() if len(s) >= min_sequence), key=natural_key)
    report["dropped: users too short for a leave-one-out split"] = len(by_user) - len(users)
    sequences = [sorted(by_user[u], key=lambda e: e[1]) for u in users]
    kept_users = set(users)
    reviews = {(i.user_id, i.item_id): i.review for i in interactions if i.review and i.user_id in kept_users}
    return PreparedDataset(raw.name, catalog, users, sequences, reviews, report)
