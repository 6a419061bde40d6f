"""Tokens per user of the committed teacher data, and what 1M / 100M users would cost on GPUs.

    PYTHONPATH=. python scripts/teacher_cost.py data/teacher/ml-100k/oracle.jsonl

Reads the records (read-only; a partial last line is ignored, the newest record per
key counts) and prints the measured token counts per record, the llama.cpp rates
stored in the records, and GPU-hour estimates built from *published* vLLM
throughput figures (see docs/TEACHER_COST.md for the sources). Those estimates are
not measured here.
"""

from __future__ import annotations

import argparse
import json
import statistics
from pathlib import Path

# Published vLLM output-token throughput (tokens generated per second, whole GPU, batched).
# Sources and workloads: docs/TEACHER_COST.md. Not measured in this project.
PUBLISHED = [
    ("1x H100, Llama-3.1-8B-Instruct FP8, vLLM 0.10.0, MLPerf v5.1 Offline (Red Hat)", 5777.0),
    ("1x L40S, Llama-3.1-8B-Instruct FP8, vLLM 0.10.0, MLPerf v5.1 Offline (Red Hat)", 1642.0),
    ("1x RTX 4090, Mistral-7B-Instruct-v0.3, vLLM, 256 in / 128 out, 48 concurrent (M. Rahman)", 1190.0),
]
USERS = (1_000_000, 100_000_000)


def load(path: Path) -> list[dict]:
    records: dict[str, dict] = {}
    with open(path, "rb") as handle:
        for line in handle:
            if line.endswith(b"\n") and line.strip():
                record = json.loads(line)
                records[record["key"]] = record
    return list(records.values())


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("path", type=Path, help="a teacher JSONL file with one record per user (oracle or unguided)")
    args = parser.parse_args(argv)
    records = load(args.path)
    if not records:
        raise SystemExit(f"no records in {args.path}")
    prompt = [r["prompt_tokens"] for r in records]
    cached = [r.get("cached_prompt_tokens") or 0 for r in records]
    completion = [r["completion_tokens"] for r in records]
    attempts = [r["attempts"] for r in records]
    ok = sum(r["status"] == "ok" for r in records)
    print(
        f"{args.path}: {len(records)} records ({ok} ok, {len(records) - ok} flagged), models {sorted({r['model'] for r in records})}"
    )
    print(
        f"  prompt tokens per record:     mean {statistics.mean(prompt):.1f}, median {statistics.median(prompt)}, "
        f"max {max(prompt)} (of which from llama.cpp's prompt cache: mean {statistics.mean(cached):.1f})"
    )
    print(
        f"  completion tokens per record: mean {statistics.mean(completion):.1f}, median {statistics.median(completion)}, "
        f"max {max(completion)}"
    )
    print(f"  attempts per record:          mean {statistics.mean(attempts):.3f} (retries are included in the token counts)")
    prompt_ms = sum(r.get("prompt_ms") or 0 for r in records)
    gen_ms = sum(r.get("generation_ms") or 0 for r in records)
    if prompt_ms and gen_ms:
        print(
            f"  llama.cpp rates in the records (per slot): prompt {(sum(prompt) - sum(cached)) / (prompt_ms / 1000):.1f} tok/s, "
            f"generation {sum(completion) / (gen_ms / 1000):.2f} tok/s"
        )
    runs: dict[str, list[float]] = {}
    for r in records:
        if "finished_at" in r:
            runs.setdefault(r.get("run", "?"), []).append(r["finished_at"])
    span_total, timed = 0.0, 0
    for run, times in sorted(runs.items(), key=lambda kv: -len(kv[1])):
        times.sort()
        span_total += times[-1] - times[0]
        timed += len(times) - 1
        if len(times) >= 3:
            print(f"  run {run}: {len(times)} records, {(times[-1] - times[0]) / (len(times) - 1):.1f} wall s per record")
    if timed:
        per_record = span_total / timed
        print(
            f"  all runs: {span_total / 3600:.2f} wall hours between first and last record of each run (pauses and"
            f" shared-CPU time included): {per_record:.1f} s per record, {per_record * 1000 / 3600:.2f} wall hours per 1,000"
        )
    per_user = statistics.mean(completion)
    print("\nGPU-hours from published output-token throughput (ESTIMATES, not measured here):")
    print(f"  generated tokens per user (measured mean): {per_user:.1f}")
    for label, tok_s in PUBLISHED:
        hours = ", ".join(f"{users / 1e6:g}M users: {users * per_user / tok_s / 3600:,.0f} GPU-h" for users in USERS)
        print(f"  {tok_s:>7,.0f} tok/s  {label}\n           -> {hours}")


if __name__ == "__main__":
    main()
