"""The load benchmark's Markdown section and plot, and writing that section into a Markdown file."""

from __future__ import annotations

import re
from pathlib import Path

from loadtest.results import MAX_ERROR_RATE, LevelResult, ratio, saturation

BEGIN = "<!-- bench_load:begin -->"
END = "<!-- bench_load:end -->"
RATIO_GOAL = 100.0


def _ms(value: float | None) -> str:
    return "-" if value is None else (f"{value:.0f}" if value >= 100 else f"{value:.1f}")


def _rps(value: float | None) -> str:
    return "-" if value is None else (f"{value:.0f}" if value >= 100 else f"{value:.2f}" if value < 10 else f"{value:.1f}")


def by_system(levels: list[LevelResult]) -> dict[str, list[LevelResult]]:
    systems: dict[str, list[LevelResult]] = {}
    for level in levels:
        systems.setdefault(level.system, []).append(level)
    return {name: sorted(rows, key=lambda lv: lv.users) for name, rows in systems.items()}


def ratio_lines(levels: list[LevelResult], fast_prefix: str = "R2END") -> list[str]:
    """One line per (R2END variant, generative system): the saturation-throughput ratio against the goal."""
    systems = by_system(levels)
    fast = {n: saturation(rows)[0] for n, rows in systems.items() if n.startswith(fast_prefix)}
    slow = {n: saturation(rows)[0] for n, rows in systems.items() if not n.startswith(fast_prefix)}
    lines = []
    for f_name, f_best in fast.items():
        for s_name, s_best in slow.items():
            value = ratio(f_best, s_best)
            if value is None:
                lines.append(f"- {f_name} / {s_name}: n/a (the generative system completed no request)")
            else:
                verdict = "meets" if value >= RATIO_GOAL else "misses"
                lines.append(f"- {f_name} / {s_name}: **{value:,.0f}x** ({verdict} the >= {RATIO_GOAL:.0f}x goal)")
    return lines


def markdown(levels: list[LevelResult], header: dict, plot_name: str | None) -> str:
    """The whole section between the markers (``header``: stamp, setup lines, notes)."""
    systems = by_system(levels)
    lines = [
        BEGIN,
        "## Load test: R2END vs a generative LLM recommender (Locust, real concurrency)",
        "",
        f"`{header['command']}`  ",
        f"git {header['git_commit']}; {header['machine']}; {header['created']}",
        "",
    ]
    lines += header.get("setup", []) + [""]
    lines += [
        "### Saturation throughput (`POST /recommend`)",
        "",
        "| system | saturation (req/s) | at users | p50 (ms) | p99 (ms) | error rate | within error budget |",
        "|---|---:|---:|---:|---:|---:|---|",
    ]
    for name, rows in systems.items():
        best, ok = saturation(rows)
        if best is not None:
            lines.append(
                f"| {name} | {_rps(best.rps)} | {best.users} | {_ms(best.p50_ms)} | {_ms(best.p99_ms)} | "
                f"{best.error_rate:.2%} | {'yes' if ok else f'no (> {MAX_ERROR_RATE:.0%})'} |"
            )
    lines += [
        "",
        *ratio_lines(levels),
        "",
        "### Every level",
        "",
        (
            "| system | users | /recommend ok req/s | all req/s | p50 (ms) | p95 (ms) | p99 Locust (ms) | p99 Prometheus (ms) "
            "| Prometheus 2xx req/s | requests | error rate |"
        ),
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for name, rows in systems.items():
        for lv in rows:
            lines.append(
                f"| {name} | {lv.users} | {_rps(lv.rps)} | {_rps(lv.total_rps)} | {_ms(lv.p50_ms)} | {_ms(lv.p95_ms)} | "
                f"{_ms(lv.p99_ms)} | {_ms(lv.prom_p99_ms)} | {_rps(lv.prom_rps)} | {lv.requests} | {lv.error_rate:.2%} |"
            )
    if plot_name:
        lines += ["", f"![throughput and p99 latency vs concurrency]({plot_name})"]
    lines += ["", *header.get("notes", []), END]
    return "\n".join(lines) + "\n"


def plot(levels: list[LevelResult], path: Path) -> Path:
    """Throughput and p99 latency against concurrency, one line per system, log scales."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import matplotlib.ticker

    fig, (left, right) = plt.subplots(1, 2, figsize=(11, 4.2))
    for name, rows in by_system(levels).items():
        users = [lv.users for lv in rows]
        left.plot(users, [max(lv.rps, 1e-3) for lv in rows], marker="o", label=name)
        p99 = [(lv.users, lv.p99_ms) for lv in rows if lv.p99_ms]
        if p99:
            right.plot(*zip(*p99, strict=True), marker="o", label=name)
    ticks = sorted({lv.users for lv in levels})
    for axis, title, unit in (
        (left, "throughput (POST /recommend)", "successful requests / s"),
        (right, "p99 latency (Locust)", "ms"),
    ):
        axis.set_xscale("log", base=2)
        axis.set_xticks(ticks, [str(t) for t in ticks])
        axis.xaxis.set_minor_locator(matplotlib.ticker.NullLocator())
        axis.set_yscale("log")
        axis.set_xlabel("concurrent users (closed loop)")
        axis.set_ylabel(unit)
        axis.set_title(title)
        axis.grid(True, which="both", alpha=0.3)
    left.legend(fontsize=8)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path


def write_section(doc: Path, section: str) -> Path:
    """Replace the marked section in ``doc`` (or append it; create the file if needed); other text is kept."""
    text = doc.read_text(encoding="utf-8") if doc.exists() else "# Benchmarks\n"
    pattern = re.compile(re.escape(BEGIN) + r".*?" + re.escape(END) + r"\n?", re.DOTALL)
    if pattern.search(text):
        text = pattern.sub(lambda _m: section, text, count=1)
    else:
        text = text.rstrip("\n") + "\n\n" + section
    doc.parent.mkdir(parents=True, exist_ok=True)
    doc.write_text(text, encoding="utf-8")
    return doc
