"""Traffic data and request bodies for the load tests (no Locust, no torch: easy to test).

The histories file is JSON::

    {"dataset": "ml-100k", "histories": [[["242", 881250949], ...], ...],
     "item_ids": ["1", ...], "categories": ["Action", ...]}
"""

from __future__ import annotations

import json
import os
import random
import uuid
from dataclasses import dataclass, field
from pathlib import Path

HISTORIES_ENV = "R2END_LT_HISTORIES"
DEFAULT_HISTORIES = (
    Path(os.environ.get("R2END_HOME") or Path.home() / ".cache" / "r2end").expanduser() / "loadtest" / "histories.json"
)
DEFAULT_MAX_HISTORY = 200  # the service's R2END_MAX_HISTORY default
DEFAULT_MIX = "recommend=85,batch=8,put=4,get=3"
TASKS = ("recommend", "batch", "put", "get")


@dataclass
class TrafficData:
    """Test-user histories (oldest first, ``(item_id, timestamp)``), catalogue ids and categories."""

    dataset: str
    histories: list[list[tuple[str, int]]]
    item_ids: list[str] = field(default_factory=list)
    categories: list[str] = field(default_factory=list)

    def save(self, path: Path) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        raw = {"dataset": self.dataset, "histories": self.histories, "item_ids": self.item_ids, "categories": self.categories}
        path.write_text(json.dumps(raw, separators=(",", ":")) + "\n", encoding="utf-8")

    @classmethod
    def load(cls, path: Path) -> TrafficData:
        path = Path(path)
        if not path.is_file():
            raise FileNotFoundError(
                f"no histories file at {path}: write one with `python loadtest/make_histories.py --dataset ml-100k --out {path}` "
                f"(or point {HISTORIES_ENV} / --histories at one)"
            )
        raw = json.loads(path.read_text(encoding="utf-8"))
        histories = [[(str(item), int(ts)) for item, ts in h] for h in raw["histories"] if h]
        if not histories:
            raise ValueError(f"{path}: no histories")
        return cls(raw.get("dataset", "?"), histories, [str(i) for i in raw.get("item_ids", [])], list(raw.get("categories", [])))


def parse_mix(text: str) -> dict[str, int]:
    """``"recommend=85,batch=8"`` -> task weights (tasks not named get 0)."""
    weights = dict.fromkeys(TASKS, 0)
    for part in filter(None, (p.strip() for p in text.split(","))):
        name, _, value = part.partition("=")
        if name not in weights or not value.strip().isdigit():
            raise ValueError(f"bad traffic mix entry {part!r}: expected name=weight with name in {TASKS}")
        weights[name] = int(value)
    if not any(weights.values()):
        raise ValueError(f"traffic mix {text!r} has no positive weight")
    return weights


def history_events(history: list[tuple[str, int]], max_history: int = DEFAULT_MAX_HISTORY) -> list[dict]:
    """The request's ``history``: the most recent ``max_history`` events with their timestamps."""
    return [{"item_id": item, "timestamp": ts} for item, ts in history[-max_history:]]


def recommend_body(history: list[tuple[str, int]], k: int = 10, max_history: int = DEFAULT_MAX_HISTORY) -> dict:
    """``POST /recommend`` body."""
    return {"history": history_events(history, max_history), "k": k}


def batch_body(
    rng: random.Random, data: TrafficData, k: int = 10, max_history: int = DEFAULT_MAX_HISTORY, users: tuple[int, int] = (2, 16)
) -> dict:
    """``POST /recommend/batch`` body for 2..16 random test users."""
    n = rng.randint(*users)
    return {"requests": [recommend_body(rng.choice(data.histories), k, max_history) for _ in range(n)]}


def new_item(rng: random.Random, data: TrafficData) -> tuple[str, dict]:
    """A new live item: a unique id ``lt-<uuid>`` and a ``PUT /items/{id}`` body."""
    item_id = f"lt-{uuid.uuid4()}"  # unique across runs and processes
    categories = rng.sample(data.categories, k=min(len(data.categories), rng.randint(1, 3))) if data.categories else []
    body = {
        "title": f"Load Test Feature {item_id[3:11]}",
        "year": rng.randint(1990, 2025),
        "categories": categories,
        "description": f"A new {' and '.join(categories).lower() or 'feature'} film added during a load test.",
    }
    return item_id, body
