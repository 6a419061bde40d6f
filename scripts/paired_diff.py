"""Paired bootstrap difference of two result files' test NDCG@10 over the same users (the CIs quoted in RESULTS.md's text).

PYTHONPATH=. python scripts/paired_diff.py ml-100k r2end abl1-unguided [--metric NDCG@10]
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from training.evaluation.bootstrap import paired_bootstrap
from training.evaluation.summary import _per_user, check_same_split

RESULTS = Path(__file__).resolve().parent.parent / "docs" / "results"


def paired_diff(dataset: str, a: str, b: str, metric: str = "NDCG@10", root: Path = RESULTS) -> dict[str, float]:
    """``a - b`` of ``metric`` per test user, refused for files of different splits."""
    first, second = (json.loads((root / dataset / f"{name}.json").read_text()) for name in (a, b))
    check_same_split(first, second)
    return paired_bootstrap(_per_user(first, metric), _per_user(second, metric))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("dataset")
    parser.add_argument("a")
    parser.add_argument("b")
    parser.add_argument("--metric", default="NDCG@10")
    args = parser.parse_args(argv)
    r = paired_diff(args.dataset, args.a, args.b, args.metric)
    print(
        f"{args.a} vs {args.b} ({args.metric}, {r['users']} users): {r['mean_a']:.4f} vs {r['mean_b']:.4f}, "
        f"diff {r['diff']:+.4f} [{r['ci_low']:+.4f}, {r['ci_high']:+.4f}], ratio {r['ratio']:.2f}"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
