"""Does the text path add anything SASRec-CE lacks on seen items? Late score fusion, measured.

    python scripts/probe_late_fusion.py --dataset ml-100k --run RUN_DIR --sasrec CHECKPOINT

RUN_DIR is a folder left by ``r2end train`` (e.g. the teacher-free text path
``$R2END_HOME/runs/ml-100k/abl3-item-target``); CHECKPOINT a SASRec-CE checkpoint of the same
split (``r2end baseline sasrec-ce`` or the R2END+CF tower's, under ``$R2END_HOME/runs/sasrec``).
Scores of both models are standardised per user over the catalogue and summed,
``z(sasrec) + w * z(text)``; ``w`` is chosen on validation NDCG@10 only, then the test users
are scored once and compared with SASRec-CE alone by a paired bootstrap. Writes
``docs/results/<dataset>/analysis/late-fusion-<run name>.json`` with command, commit and machine.

An upper bound of sorts for any hybrid that keeps the two models' scores apart: if the sum of
the two rankers gains nothing over SASRec on validation-chosen weights, the text path holds
no warm-item signal SASRec lacks, and a hybrid must get it elsewhere (e.g. a better teacher).
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from training.data.registry import load_dataset
from training.evaluation.bootstrap import paired_bootstrap
from training.evaluation.evaluator import evaluate
from training.models.sasrec import SASRec, SASRecConfig, SASRecNet
from training.paths import results_dir
from training.provenance import command_line, git_commit, machine
from training.r2end.artifacts import load_run

WEIGHTS = (0.0, 0.02, 0.05, 0.1, 0.2, 0.3, 0.5, 0.75, 1.0, 1.5, 2.0)


class Fixed:
    """A score matrix over all users, served to the one evaluator."""

    def __init__(self, name: str, scores: np.ndarray):
        self.name, self.scores = name, scores

    def score(self, ds, users, histories):  # the evaluator's Scorer protocol
        return self.scores[list(users)]


def all_scores(model, ds, stage: str) -> np.ndarray:
    users = list(range(ds.n_users))
    histories = [ds.example(u, stage)[0] for u in users]
    return np.concatenate(
        [
            np.asarray(model.score(ds, users[i : i + 256], histories[i : i + 256]), dtype=np.float64)
            for i in range(0, len(users), 256)
        ]
    )


def standardise(scores: np.ndarray) -> np.ndarray:
    return (scores - scores.mean(1, keepdims=True)) / (scores.std(1, keepdims=True) + 1e-9)


def load_sasrec(path: Path, n_items: int, split_hash: str) -> SASRec:
    state = torch.load(path, weights_only=False)
    if state["identity"]["split"] != split_hash:
        raise SystemExit(f"{path}: SASRec checkpoint of another split ({state['identity']['split'][:8]} != {split_hash[:8]})")
    config = SASRecConfig(**state["identity"]["config"])
    model = SASRec(config)
    model.net = SASRecNet(n_items, config)
    model.net.load_state_dict(state["best_state"] or state["net"])
    return model


def load_probe_inputs(description: str):
    """The probes' command line (--dataset, --run, --sasrec, --threads) and what it names: the dataset, the text
    path's scorer and run metadata, SASRec-CE; a run or checkpoint of another split is refused."""
    parser = argparse.ArgumentParser(description=description)
    parser.add_argument("--dataset", default="ml-100k")
    parser.add_argument("--run", type=Path, required=True, help="run folder of a trained text-path / R2END model")
    parser.add_argument("--sasrec", type=Path, required=True, help="SASRec-CE checkpoint (.pt) of the same split")
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    ds = load_dataset(args.dataset)
    text, _, meta = load_run(args.run)
    if meta.get("split_hash") not in (None, ds.split_hash):
        raise SystemExit(f"{args.run}: trained on another split")
    return args, ds, text, meta, load_sasrec(args.sasrec, ds.n_items, ds.split_hash)


def main() -> None:
    args, ds, text, meta, sasrec = load_probe_inputs(__doc__.splitlines()[0])
    scores = {
        stage: {"sasrec": all_scores(sasrec, ds, stage), "text": all_scores(text, ds, stage)} for stage in ("valid", "test")
    }
    z = {stage: {name: standardise(s) for name, s in parts.items()} for stage, parts in scores.items()}
    curve = []
    for w in WEIGHTS:
        fused = z["valid"]["sasrec"] + w * z["valid"]["text"]
        curve.append(
            {"w": w, "valid_NDCG@10": evaluate(Fixed("fused", fused), ds, "valid", keep_per_user=False).metrics["NDCG@10"]}
        )
        print(f"w={w:<5} valid NDCG@10 {curve[-1]['valid_NDCG@10']:.4f}", flush=True)
    best = max(curve, key=lambda row: row["valid_NDCG@10"])["w"]
    results = {
        name: evaluate(Fixed(name, s), ds, "test")
        for name, s in (
            ("sasrec", scores["test"]["sasrec"]),
            ("text", scores["test"]["text"]),
            ("fused", z["test"]["sasrec"] + best * z["test"]["text"]),
        )
    }
    comparison = paired_bootstrap(np.array(results["fused"].per_user["NDCG@10"]), np.array(results["sasrec"].per_user["NDCG@10"]))
    for name, result in results.items():
        print(name, {k: round(v, 4) for k, v in result.metrics.items()})
    print("fused vs SASRec-CE, NDCG@10:", {k: round(v, 4) if isinstance(v, float) else v for k, v in comparison.items()})
    out = results_dir() / ds.name / "analysis" / f"late-fusion-{args.run.name}.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(
        json.dumps(
            {
                "what": "z(SASRec-CE) + w * z(text path), w chosen on validation NDCG@10",
                "dataset": ds.name,
                "split_hash": ds.split_hash,
                "text_run": args.run.name,
                "text_config": meta["config"],
                "sasrec_config": sasrec.config.identity(),
                "validation_curve": curve,
                "chosen_w": best,
                "test": {name: r.metrics for name, r in results.items()},
                "fused_vs_sasrec_NDCG@10": comparison,
                "command": command_line(),
                "git_commit": git_commit(),
                "machine": machine(),
            },
            indent=1,
        )
        + "\n"
    )
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
