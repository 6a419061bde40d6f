"""What the overload and soak scripts read from a running service: its metrics, its queue bound, pinned cores.

The latency goal of issue #16 (p99 of accepted requests <= queue bound / capacity + one batch
time) needs the server's own batch time, which only its Prometheus metrics know, and the bound
on the requests waiting, which the service's settings compute; both scripts get them here.
"""

from __future__ import annotations

from pathlib import Path

import httpx
from prometheus_client.parser import text_string_to_metric_families

from service.settings import ServiceSettings


def scrape(url: str) -> dict[str, float]:
    """The server's Prometheus samples, ``name{label=value,...}`` -> value (labels sorted)."""
    text = httpx.get(url + "/metrics", timeout=30).text
    samples = {}
    for family in text_string_to_metric_families(text):
        for s in family.samples:
            labels = ",".join(f"{k}={v}" for k, v in sorted(s.labels.items()))
            samples[f"{s.name}{{{labels}}}"] = s.value
    return samples


def total(samples: dict[str, float], name: str) -> float:
    """Sum of every sample called ``name`` (all label values)."""
    return sum(v for k, v in samples.items() if k.split("{", 1)[0] == name)


def batch_stats(before: dict[str, float], after: dict[str, float]) -> tuple[float | None, float | None]:
    """Mean milliseconds (tokenise + encode) and histories of one encode batch between two scrapes; None without batches."""

    def delta(name: str) -> float:
        return total(after, name) - total(before, name)

    batches = delta("r2end_batch_size_count")
    if batches <= 0:
        return None, None
    seconds = delta("r2end_tokenize_seconds_sum") + delta("r2end_encode_seconds_sum")
    return seconds / batches * 1000, delta("r2end_batch_size_sum") / batches


def queue_bound(bundle: Path, settings: dict[str, str], server_cores: int | None = None) -> tuple[str, int]:
    """The most requests the service lets wait with these settings, as the service itself computes it, and its name.

    The environment is ignored (``procs.service`` does not pass it on either). A service with
    admission control has ``ServiceSettings.inflight_limit``; one from before it bounds only the
    batcher's queue (``queue_size``): the overload benchmark is run at commits on both sides.
    ``server_cores``: the cores the server is pinned to, which its default encode workers follow
    (this process may have other cores).
    """
    if server_cores and "encode_workers" in ServiceSettings.model_fields and "encode_workers" not in settings:
        settings = {**settings, "encode_workers": str(server_cores)}
    config = ServiceSettings(_env_prefix="R2END_BENCH_IGNORED_", _env_file=None, bundle_path=bundle, **settings)
    if hasattr(config, "inflight_limit"):
        return "admission limit", int(config.inflight_limit)
    return "queue_size", int(config.queue_size)


def accepted_p99_limit_ms(bound: float, capacity_per_s: float, batch_ms: float) -> float:
    """Issue #16: an accepted request waits at most for the queue ahead of it to drain, plus its own batch."""
    return bound / capacity_per_s * 1000 + batch_ms


def parse_cpus(text: str) -> set[int]:
    """``0``, ``0,2`` or ``0-3`` -> core numbers (the ``taskset -c`` syntax)."""
    cores: set[int] = set()
    for part in text.split(","):
        lo, _, hi = part.strip().partition("-")
        cores.update(range(int(lo), int(hi or lo) + 1))
    return cores


def parse_settings(items: list[str]) -> dict[str, str]:
    """``["queue_size=64", ...]`` -> ``{"queue_size": "64"}``; a name that is not a service setting is an error."""
    pairs = {}
    for item in items:
        name, sep, value = item.partition("=")
        name = name.strip().lower()
        if not sep or name not in ServiceSettings.model_fields:
            raise ValueError(
                f"{item!r}: expected NAME=VALUE with NAME a service setting ({', '.join(ServiceSettings.model_fields)})"
            )
        pairs[name] = value
    return pairs
