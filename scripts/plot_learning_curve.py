"""R2END's learning curve: test NDCG@10 against the number of rationales distilled (issue 11, step 3).

    PYTHONPATH=. python scripts/plot_learning_curve.py ml-100k

Reads the committed result files of the curve's runs (``r2end train --variant r2end-lc<N>
--set rationale_users=<N>``, and ``r2end`` for all rationales), prints a Markdown table with each
point's test NDCG@10, its 95% bootstrap interval over test users, and its paired difference from
the teacher-free reference (ablation 3: the same pipeline, the true item as the target), and
writes ``docs/results/<dataset>/learning-curve.png``. Nothing is trained here.
"""

from __future__ import annotations

import argparse
import json
import re

import numpy as np

from training.evaluation.bootstrap import paired_bootstrap
from training.paths import results_dir

CURVE = ("r2end-lc200", "r2end-lc400", "r2end-lc650", "r2end")
REFERENCE = "abl3-item-target"


def rationales_used(record: dict) -> int:
    """How many users' rationales were distilled: the run's ``rationale_users``, else every usable one (its notes)."""
    asked = record["config"].get("rationale_users")
    if asked is not None:
        return int(asked)
    found = re.search(r"rationales (\d+)/", record.get("notes", ""))
    if not found:
        raise ValueError(f"{record['model']}: no rationale count in the result's notes")
    return int(found.group(1))


def per_user(record: dict, reference: dict, metric: str) -> np.ndarray:
    """The record's per-user test metric in the reference's user order (both must be the same split)."""
    if record["split_hash"] != reference["split_hash"]:
        raise ValueError(f"{record['model']} and {reference['model']} were evaluated on different splits")
    values = dict(zip(record["per_user_test"]["users"], record["per_user_test"][metric], strict=True))
    return np.array([values[u] for u in reference["per_user_test"]["users"]])


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("dataset")
    parser.add_argument("--variants", nargs="+", default=list(CURVE), help="result files of the curve, by variant name")
    parser.add_argument("--reference", default=REFERENCE, help="the teacher-free reference's variant name")
    args = parser.parse_args(argv)
    folder = results_dir() / args.dataset
    load = lambda name: json.loads((folder / f"{name}.json").read_text())
    reference = load(args.reference)
    base = per_user(reference, reference, "NDCG@10")
    rows = []
    for name in args.variants:
        record = load(name)
        ndcg = per_user(record, reference, "NDCG@10")
        alone = paired_bootstrap(ndcg, np.zeros_like(ndcg))
        versus = paired_bootstrap(ndcg, base)
        rows.append((rationales_used(record), name, record, alone, versus))
    rows.sort(key=lambda row: row[0])

    print(f"| rationales | variant | test NDCG@10 [95% CI] | test HR@10 | valid NDCG@10 | vs {args.reference} NDCG@10 | commit |")
    print("|---:|---|---|---:|---:|---|---|")
    for count, name, record, alone, versus in rows:
        print(
            f"| {count} | {name} | {alone['diff']:.4f} [{alone['ci_low']:.4f}, {alone['ci_high']:.4f}] "
            f"| {record['test']['HR@10']:.4f} | {record['valid']['NDCG@10']:.4f} "
            f"| {versus['diff']:+.4f} [{versus['ci_low']:+.4f}, {versus['ci_high']:+.4f}] | {record['git_commit'][:8]} |"
        )
    print(
        f"| 0 (true item as target) | {args.reference} | {base.mean():.4f} | {reference['test']['HR@10']:.4f} "
        f"| {reference['valid']['NDCG@10']:.4f} | | {reference['git_commit'][:8]} |"
    )

    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 4))
    counts = [row[0] for row in rows]
    means = np.array([row[3]["diff"] for row in rows])
    errors = np.array([[row[3]["diff"] - row[3]["ci_low"], row[3]["ci_high"] - row[3]["diff"]] for row in rows]).T
    ax.errorbar(counts, means, yerr=errors, marker="o", capsize=4, label="R2END (oracle rationales)")
    ax.axhline(base.mean(), color="grey", linestyle="--", label=f"{args.reference} (no teacher)")
    ax.set_xlabel("users whose rationale is distilled")
    ax.set_ylabel("test NDCG@10 (95% bootstrap CI)")
    ax.set_title(f"R2END learning curve, {args.dataset}")
    ax.legend(loc="lower right")
    fig.tight_layout()
    out = folder / "learning-curve.png"
    fig.savefig(out, dpi=120)
    print(f"\nwrote {out}")


if __name__ == "__main__":
    main()
