"""Read Locust's CSV output and reduce it to one row per (system, concurrency level).

Locust writes ``<prefix>_stats.csv`` (whole-run totals and percentiles per request name plus an
``Aggregated`` row) and ``<prefix>_stats_history.csv`` (cumulative counts every second; per name
with ``--csv-full-history``). Throughput is taken from the history over the steady part of the
run (after the users have spawned and a warm-up share of the run has passed, up to the last
second in which requests completed), so ramp-up and the idle tail do not dilute it; the latency
percentiles are Locust's whole-run ones (rounded by Locust: 1 ms below 100 ms, 10 ms below 1 s).
"""

from __future__ import annotations

import csv
from dataclasses import asdict, dataclass
from pathlib import Path

AGGREGATED = "Aggregated"
MEASURED = "/recommend"
MAX_ERROR_RATE = 0.01


@dataclass
class LevelResult:
    """One Locust run at a fixed number of users (closed loop: users = concurrency)."""

    system: str
    users: int
    requests: int
    failures: int
    rps: float
    """sustained successful requests/s of the measured request name (``POST /recommend``)"""
    total_rps: float
    """sustained requests/s over every request name"""
    p50_ms: float | None
    p95_ms: float | None
    p99_ms: float | None
    window: tuple[int, int] | None = None
    """unix seconds of the steady window the rates come from"""
    prom_p99_ms: float | None = None
    prom_rps: float | None = None

    @property
    def error_rate(self) -> float:
        return self.failures / self.requests if self.requests else 1.0

    def to_json(self) -> dict:
        return {**asdict(self), "error_rate": self.error_rate}


def _number(value: str | None) -> float | None:
    try:
        return float(value) if value not in (None, "", "N/A") else None
    except ValueError:
        return None


def read_rows(path: Path) -> list[dict[str, str]]:
    with open(path, newline="", encoding="utf-8") as handle:
        return list(csv.DictReader(handle))


def read_stats(prefix: Path | str) -> dict[str, dict[str, str]]:
    """``<prefix>_stats.csv`` rows keyed by request name."""
    return {row["Name"]: row for row in read_rows(Path(f"{prefix}_stats.csv"))}


def read_history(prefix: Path | str) -> list[dict[str, str]]:
    path = Path(f"{prefix}_stats_history.csv")
    return read_rows(path) if path.is_file() else []


def steady_window(history: list[dict[str, str]], users: int, warmup_fraction: float = 0.2) -> tuple[int, int] | None:
    """``(start, end)`` unix seconds: from full spawn plus warm-up to the first row with the final count."""
    rows = [r for r in history if r["Name"] == AGGREGATED]
    spawned = [int(r["Timestamp"]) for r in rows if int(r["User Count"] or 0) >= users]
    if len(spawned) < 2:
        return None
    final = max(int(r["Total Request Count"]) for r in rows)
    end = min(int(r["Timestamp"]) for r in rows if int(r["Total Request Count"]) == final)
    begin = spawned[0]
    start = begin + max(1, round(warmup_fraction * (end - begin)))
    return (start, end) if end - start >= 1 else None


def rate(history: list[dict[str, str]], name: str, window: tuple[int, int]) -> tuple[float, float] | None:
    """``(requests/s, successful requests/s)`` of ``name`` between the window's two rows, or None."""
    rows = {int(r["Timestamp"]): r for r in history if r["Name"] == name}
    start, end = window
    before = max((t for t in rows if t <= start), default=None)
    after = min((t for t in rows if t >= end), default=None)
    if before is None or after is None or after <= before:
        return None
    count = int(rows[after]["Total Request Count"]) - int(rows[before]["Total Request Count"])
    failed = int(rows[after]["Total Failure Count"]) - int(rows[before]["Total Failure Count"])
    return count / (after - before), (count - failed) / (after - before)


def level_result(system: str, users: int, prefix: Path | str, name: str = MEASURED, warmup_fraction: float = 0.2) -> LevelResult:
    """One level's numbers from its CSV files (``name``'s row; whole-run rates when the history is too short)."""
    stats = read_stats(prefix)
    total = stats.get(AGGREGATED, {})
    row = stats.get(name, {})
    history = read_history(prefix)
    window = steady_window(history, users, warmup_fraction)
    measured = rate(history, name, window) if window else None
    overall = rate(history, AGGREGATED, window) if window else None
    if measured is None or overall is None:  # fall back to Locust's whole-run rates
        window = None
        fails = _number(row.get("Failures/s")) or 0.0
        measured = (_number(row.get("Requests/s")) or 0.0, max(0.0, (_number(row.get("Requests/s")) or 0.0) - fails))
        overall = (_number(total.get("Requests/s")) or 0.0, 0.0)
    return LevelResult(
        system=system,
        users=users,
        requests=int(_number(total.get("Request Count")) or 0),
        failures=int(_number(total.get("Failure Count")) or 0),
        rps=measured[1],
        total_rps=overall[0],
        p50_ms=_number(row.get("50%")),
        p95_ms=_number(row.get("95%")),
        p99_ms=_number(row.get("99%")),
        window=window,
    )


def saturation(levels: list[LevelResult], max_error_rate: float = MAX_ERROR_RATE) -> tuple[LevelResult | None, bool]:
    """The level with the highest sustained throughput among those within the error budget.

    Returns ``(level, within_budget)``; when no level is within the budget, the best level overall
    and False (its throughput is then not a sustainable one).
    """
    if not levels:
        return None, False
    good = [lv for lv in levels if lv.error_rate <= max_error_rate and lv.rps > 0]
    if good:
        return max(good, key=lambda lv: lv.rps), True
    return max(levels, key=lambda lv: lv.rps), False


def ratio(fast: LevelResult | None, slow: LevelResult | None) -> float | None:
    """Saturation throughput ratio ``fast / slow`` (None when either is missing or ``slow`` served nothing)."""
    if fast is None or slow is None or slow.rps <= 0:
        return None
    return fast.rps / slow.rps
