"""Paired bootstrap difference of two result files' test NDCG@10 over the same users (the CIs quoted in RESULTS.md's text).

PYTHONPATH=. python scripts/paired_diff.py ml-100k r2end abl1-unguided [--metric NDCG@10]
PYTHONPATH=. python scripts/paired_diff.py ml-100k r2end-cold abl3-item-target-cold --metric HR@10 --targets cold
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from training.evaluation.bootstrap import paired_bootstrap
from training.evaluation.summary import _cold_users, _per_user, check_same_split

RESULTS = Path(__file__).resolve().parent.parent / "docs" / "results"
TARGETS = ("all", "cold", "warm")


def _target_users(first: dict, second: dict, targets: str) -> list[int] | None:
    """The test users to compare: all, or (cold-start protocol) those whose target is a held-out item, or the others."""
    if targets == "all":
        return None
    if "cold_start" not in first or "cold_start" not in second:
        raise ValueError(f"--targets {targets} needs two results of the cold-start protocol")
    cold = set(_cold_users(first))
    if cold != set(_cold_users(second)):
        raise ValueError("the two results held out different items (their cold-target users differ)")
    users = first["per_user_test"]["users"]
    return [u for u in users if (u in cold) == (targets == "cold")]


def paired_diff(
    dataset: str, a: str, b: str, metric: str = "NDCG@10", root: Path = RESULTS, targets: str = "all"
) -> dict[str, float]:
    """``a - b`` of ``metric`` per test user (all, or those with a cold or a warm target), refused across splits."""
    first, second = (json.loads((root / dataset / f"{name}.json").read_text()) for name in (a, b))
    check_same_split(first, second)
    users = _target_users(first, second, targets)
    return paired_bootstrap(_per_user(first, metric, users), _per_user(second, metric, users))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("dataset")
    parser.add_argument("a")
    parser.add_argument("b")
    parser.add_argument("--metric", default="NDCG@10")
    parser.add_argument("--targets", choices=TARGETS, default="all", help="cold-start protocol: users with a cold or warm target")
    args = parser.parse_args(argv)
    r = paired_diff(args.dataset, args.a, args.b, args.metric, targets=args.targets)
    print(
        f"{args.a} vs {args.b} ({args.metric}, {r['users']} {args.targets}-target users): {r['mean_a']:.4f} vs {r['mean_b']:.4f}, "
        f"diff {r['diff']:+.4f} [{r['ci_low']:+.4f}, {r['ci_high']:+.4f}], ratio {r['ratio']:.2f}"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
