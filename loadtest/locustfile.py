"""Realistic traffic against the R2END service (or the generative baseline, which has the same /recommend).

Histories are test-user histories of the served dataset (``loadtest/make_histories.py`` writes
them; no torch here), sent as item ids with timestamps, capped at the service's max_history.
The default mix: mostly ``POST /recommend``, some ``POST /recommend/batch`` (2-16 users), a few
``PUT /items/lt-<uuid>`` upserts of new items and ``GET /items/{id}``. Closed loop by default
(each user sends its next request when the last is answered), so ``-u`` is the concurrency.

    locust -f loadtest/locustfile.py --headless -u 8 -r 8 -t 60s --csv /tmp/r2end --host http://127.0.0.1:8000
    R2END_LT_SHAPE=step locust -f loadtest/locustfile.py --headless --csv /tmp/step --host ...   # see loadtest/shapes.py

Options (also as environment variables): ``--histories`` (R2END_LT_HISTORIES), ``--mix``
(R2END_LT_MIX, e.g. ``recommend=1`` for /recommend only), ``--k``, ``--max-history``
(R2END_LT_MAX_HISTORY, match the service's R2END_MAX_HISTORY), ``--think-time`` (R2END_LT_THINK_TIME,
mean seconds between a user's requests; 0 = closed loop), ``--write-token`` (R2END_LT_WRITE_TOKEN, the
service's R2END_WRITE_TOKEN, sent with the PUTs).
"""

from __future__ import annotations

import random
import sys
from functools import cache
from pathlib import Path

if __package__ in (None, "") and str(Path(__file__).resolve().parent.parent) not in sys.path:
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # `locust -f .../loadtest/locustfile.py` from anywhere

import gevent
from locust import FastHttpUser, events
from locust.env import Environment
from locust.stats import CSV_STATS_INTERVAL_SEC

from loadtest import shapes, traffic

DEFAULTS = {
    "histories": str(traffic.DEFAULT_HISTORIES),
    "mix": traffic.DEFAULT_MIX,
    "k": 10,
    "max_history": traffic.DEFAULT_MAX_HISTORY,
    "think_time": 0.0,
    "write_token": "",
}


@events.init_command_line_parser.add_listener
def _options(parser) -> None:
    parser.add_argument("--histories", env_var="R2END_LT_HISTORIES", default=DEFAULTS["histories"], help="histories JSON file")
    parser.add_argument(
        "--mix", env_var="R2END_LT_MIX", default=DEFAULTS["mix"], help="task weights, e.g. recommend=85,batch=8,put=4,get=3"
    )
    parser.add_argument("--k", env_var="R2END_LT_K", type=int, default=DEFAULTS["k"], help="items per recommendation")
    parser.add_argument(
        "--max-history",
        env_var="R2END_LT_MAX_HISTORY",
        type=int,
        default=DEFAULTS["max_history"],
        help="most recent events sent per history (the service's R2END_MAX_HISTORY)",
    )
    parser.add_argument(
        "--think-time",
        env_var="R2END_LT_THINK_TIME",
        type=float,
        default=DEFAULTS["think_time"],
        help="mean seconds between a user's requests (0: closed loop)",
    )
    parser.add_argument(
        "--write-token",
        env_var="R2END_LT_WRITE_TOKEN",
        default=DEFAULTS["write_token"],
        help="the service's R2END_WRITE_TOKEN, sent as a bearer token with PUT /items",
        is_secret=True,
    )


def option(environment: Environment, name: str):
    """A custom option's value (defaults when Locust runs as a library without parsed options)."""
    return getattr(environment.parsed_options, name, DEFAULTS[name]) if environment.parsed_options else DEFAULTS[name]


def answered(resp) -> bool:
    """A 2xx JSON answer whose content we can check (Locust itself fails non-2xx and non-JSON answers)."""
    return resp.js is not None and 200 <= resp.status_code < 300


@cache
def traffic_data(path: str) -> traffic.TrafficData:
    """The histories file, read once per process."""
    return traffic.TrafficData.load(Path(path))


class RecommendUser(FastHttpUser):
    """One client of the service; ``tasks`` is set from ``--mix`` when Locust starts."""

    network_timeout = 300.0  # the generative baseline answers in seconds; let latency, not timeouts, show saturation
    connection_timeout = 60.0

    def wait_time(self) -> float:
        mean = option(self.environment, "think_time")
        return self.rng.uniform(0.5 * mean, 1.5 * mean) if mean > 0 else 0.0

    def on_start(self) -> None:
        self.rng = random.Random()
        self.data = traffic_data(option(self.environment, "histories"))
        self.k = option(self.environment, "k")
        self.max_history = option(self.environment, "max_history")
        self.created: list[str] = []
        token = option(self.environment, "write_token")
        self.write_headers = {"Authorization": f"Bearer {token}"} if token else {}

    def recommend(self) -> None:
        body = traffic.recommend_body(self.rng.choice(self.data.histories), self.k, self.max_history)
        with self.rest("POST", "/recommend", json=body) as resp:
            if answered(resp) and not resp.js.get("items"):
                resp.failure("no items in the answer")

    def batch(self) -> None:
        body = traffic.batch_body(self.rng, self.data, self.k, self.max_history)
        with self.rest("POST", "/recommend/batch", json=body) as resp:
            if answered(resp) and len(resp.js.get("results", [])) != len(body["requests"]):
                resp.failure("wrong number of results")

    def put_item(self) -> None:
        item_id, body = traffic.new_item(self.rng, self.data)
        with self.rest("PUT", f"/items/{item_id}", json=body, headers=self.write_headers, name="/items/{id} PUT") as resp:
            if resp.status_code == 201:
                self.created.append(item_id)
            elif answered(resp):
                resp.failure(f"expected 201 for a new item, got {resp.status_code}")

    def get_item(self) -> None:
        ids = self.created if self.created and self.rng.random() < 0.5 else self.data.item_ids
        if not ids:
            return
        with self.rest("GET", f"/items/{self.rng.choice(ids)}", name="/items/{id} GET") as resp:
            if answered(resp) and "item_id" not in resp.js:
                resp.failure("no item_id in the answer")


TASK_METHODS = {
    "recommend": RecommendUser.recommend,
    "batch": RecommendUser.batch,
    "put": RecommendUser.put_item,
    "get": RecommendUser.get_item,
}


@events.init.add_listener
def _on_init(environment: Environment, **_kwargs) -> None:
    weights = traffic.parse_mix(option(environment, "mix"))
    RecommendUser.tasks = [TASK_METHODS[name] for name, weight in weights.items() for _ in range(weight)]
    if environment.parsed_options is not None and getattr(environment.parsed_options, "csv_prefix", None):
        environment.events.quit.add_listener(_final_csv_write)


def _final_csv_write(**_kwargs) -> None:
    """Locust rewrites its CSV files every second but not at exit: wait one more cycle so they hold the final numbers."""
    gevent.sleep(CSV_STATS_INTERVAL_SEC + 0.25)


RecommendUser.tasks = [RecommendUser.recommend]  # replaced by --mix at init
LoadShape = shapes.shape_from_env()  # None unless R2END_LT_SHAPE is set (then -u/-r/-t are ignored)
