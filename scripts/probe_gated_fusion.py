"""Why does the text path add so little to SASRec-CE on seen items, and would a gate help?

    python scripts/probe_gated_fusion.py --dataset ml-100k --run RUN_DIR --sasrec CHECKPOINT

Issue #12 asks, where the hybrids fall short of 1.10x SASRec-CE, which users gain or lose and
whether a gate between the text and the ID scores (learned from history length or item
popularity) does better than one global weight. This probe answers both from score matrices,
with the same inputs as ``probe_late_fusion.py`` (a text-path run folder and a SASRec-CE
checkpoint of the same split):

* ``single``: ``z(sasrec) + w * z(text)`` with one ``w`` (the late-fusion probe's design);
* ``by-history-length``: one ``w`` per user bucket (terciles of the input history length);
* ``by-item-popularity``: one ``w`` for head items (the 20% most popular in training), another
  for tail items, i.e. the text term is gated by the item's popularity.

Every weight is chosen on validation NDCG@10 only; test users are scored once per design and
compared with SASRec-CE alone by a paired bootstrap. Diagnostics: the paired test difference of
the single-weight fusion per history-length bucket and for head / tail targets (who gains, who
loses), the mean per-user correlation of the two standardised score vectors (how redundant the
text is), and how often each model ranks the target higher. Writes
``docs/results/<dataset>/analysis/gated-fusion-<run name>.json`` with command, commit, machine.
"""

from __future__ import annotations

import itertools
import json
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from probe_late_fusion import WEIGHTS, Fixed, all_scores, load_probe_inputs, standardise

from index.hybrid import history_weights
from training.evaluation.bootstrap import paired_bootstrap
from training.evaluation.evaluator import evaluate, tail_items
from training.paths import results_dir
from training.provenance import command_line, git_commit, machine
from training.r2end.hybrid import choose_length_gate

STAGES = ("valid", "test")


def per_user_ndcg(ds, scores: np.ndarray, stage: str) -> np.ndarray:
    return np.asarray(evaluate(Fixed("fused", scores), ds, stage).per_user["NDCG@10"])


def bucket_of(histories, edges) -> np.ndarray:
    """Each history's gate bucket, by the rule the hybrid applies (:func:`index.hybrid.history_weights`)."""
    index = history_weights(histories, 0.0, edges, range(len(edges) + 1))
    return np.broadcast_to(np.asarray(index, dtype=int), (len(histories),))


def describe(comparison: dict) -> dict:
    return {k: round(v, 5) if isinstance(v, float) else v for k, v in comparison.items()}


def main() -> None:
    args, ds, text, _, sasrec = load_probe_inputs(__doc__.splitlines()[0])
    z = {
        stage: {"sasrec": standardise(all_scores(sasrec, ds, stage)), "text": standardise(all_scores(text, ds, stage))}
        for stage in STAGES
    }
    base = {stage: per_user_ndcg(ds, z[stage]["sasrec"], stage) for stage in STAGES}
    head = ~tail_items(ds)
    histories = {stage: [ds.example(u, stage)[0] for u in range(ds.n_users)] for stage in STAGES}

    # single weight, and the per-bucket choice from the same validation evaluations
    valid_per_w = {w: per_user_ndcg(ds, z["valid"]["sasrec"] + w * z["valid"]["text"], "valid") for w in WEIGHTS}
    single_w = max(WEIGHTS, key=lambda w: float(valid_per_w[w].mean()))
    lengths = np.array([len(h) for h in histories["valid"]])
    edges, bucket_weights = choose_length_gate(valid_per_w, lengths, 3)  # the hybrid's own rule, on validation only
    buckets = {stage: bucket_of(histories[stage], edges) for stage in STAGES}
    bucket_w = dict(enumerate(bucket_weights))
    print(f"single w={single_w}; per history-length bucket (edges {edges}): {bucket_w}", flush=True)

    # item-popularity gate: a weight for head items and one for tail items
    gate_curve = []
    for w_head, w_tail in itertools.product(WEIGHTS, WEIGHTS):
        item_w = np.where(head, w_head, w_tail)
        ndcg = float(per_user_ndcg(ds, z["valid"]["sasrec"] + item_w * z["valid"]["text"], "valid").mean())
        gate_curve.append({"w_head": w_head, "w_tail": w_tail, "valid_NDCG@10": ndcg})
    best_gate = max(gate_curve, key=lambda row: row["valid_NDCG@10"])
    print(f"popularity gate: {best_gate}", flush=True)

    def fused(stage: str, design: str) -> np.ndarray:
        s, t = z[stage]["sasrec"], z[stage]["text"]
        if design == "single":
            return s + single_w * t
        if design == "by-history-length":
            w = np.broadcast_to(np.asarray(history_weights(histories[stage], single_w, edges, bucket_weights)), (len(s),))
            return s + w[:, None] * t
        return s + np.where(head, best_gate["w_head"], best_gate["w_tail"]) * t

    designs, per_user_test = {}, {}
    for design in ("single", "by-history-length", "by-item-popularity"):
        valid = per_user_ndcg(ds, fused("valid", design), "valid")
        test = per_user_test[design] = per_user_ndcg(ds, fused("test", design), "test")
        designs[design] = {
            "valid_NDCG@10": float(valid.mean()),
            "test_NDCG@10": float(test.mean()),
            "test_vs_sasrec": describe(paired_bootstrap(test, base["test"])),
        }
        print(design, designs[design], flush=True)

    # who gains and who loses with the single weight, on test
    single_test = per_user_test["single"]
    targets = np.array([ds.example(u, "test")[1] for u in range(ds.n_users)])
    groups = {f"history bucket {b}": buckets["test"] == b for b in np.unique(buckets["test"])}
    groups.update({"head target": head[targets], "tail target": ~head[targets]})
    who = {
        name: {"users": int(mask.sum()), **describe(paired_bootstrap(single_test[mask], base["test"][mask]))}
        for name, mask in groups.items()
    }
    for name, row in who.items():
        print(name, row)

    s, t = z["test"]["sasrec"], z["test"]["text"]
    correlation = float(np.mean((s * t).mean(axis=1)))  # both standardised per user: the mean product is Pearson's r
    rows = np.arange(ds.n_users)
    target_rank = {name: (z["test"][name] > z["test"][name][rows, targets][:, None]).sum(axis=1) for name in ("sasrec", "text")}
    diagnostics = {
        "mean_per_user_pearson_test": correlation,
        "text_ranks_target_higher_share": float((target_rank["text"] < target_rank["sasrec"]).mean()),
        "sasrec_ranks_target_higher_share": float((target_rank["sasrec"] < target_rank["text"]).mean()),
        "median_target_rank_test": {name: float(np.median(r)) for name, r in target_rank.items()},
    }
    print(diagnostics)

    out = results_dir() / ds.name / "analysis" / f"gated-fusion-{args.run.name}.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    record = {
        "what": "z(SASRec-CE) + w * z(text path) with one w, one w per history-length bucket, or a w per head/tail item; "
        "weights chosen on validation NDCG@10",
        "dataset": ds.name,
        "split_hash": ds.split_hash,
        "text_run": args.run.name,
        "sasrec_config": sasrec.config.identity(),
        "sasrec_test_NDCG@10": float(base["test"].mean()),
        "single_w": single_w,
        "history_length_edges": list(edges),
        "history_bucket_w": {str(k): v for k, v in bucket_w.items()},
        "popularity_gate": best_gate,
        "popularity_gate_curve": gate_curve,
        "designs": designs,
        "single_w_gain_by_group_test": who,
        "diagnostics": diagnostics,
        "command": command_line(),
        "git_commit": git_commit(),
        "machine": machine(),
    }
    out.write_text(json.dumps(record, indent=1) + "\n")
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
