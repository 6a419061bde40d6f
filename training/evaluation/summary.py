"""docs/RESULTS.md tables, generated from the result files in docs/results/ (never typed by hand).

Only the block between the markers is rewritten, so the analysis text around it stays.
Rows without a result file are shown as pending with the reason, never filled in.
Differences to SASRec-CE come with a paired bootstrap 95% interval over the same test users;
result files made on different splits are never paired (:class:`SplitMismatch`).
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import numpy as np

from training.baselines import NOT_CONVERGED
from training.evaluation.bootstrap import paired_bootstrap
from training.evaluation.report import load_results
from training.paths import REPO_ROOT, teacher_data_dir

BEGIN, END = "<!-- BEGIN GENERATED: r2end report -->", "<!-- END GENERATED -->"
MAIN_ROWS: list[tuple[str, str]] = [
    ("pop", "Pop"),
    ("sasrec-ce", "SASRec-CE (tuned)"),
    ("meanpool", "Mean-pooled history (ablation 4)"),
    ("r2end", "**R2END** (paper defaults)"),
    ("abl1-unguided", "(1) w/o oracle guide (all)"),
    ("abl2-unguided-rs", "(2) w/o oracle guide (rejection sampling)"),
    ("abl3-item-target", "(3) w/o LLM reasoning (target = true item)"),
    ("abl5-no-projection", "(5) w/o projection"),
    ("abl6-no-reg", "(6) w/o L_reg"),
    ("r2end-long-projection", "R2END, projection trained 100 epochs (epoch chosen on validation)"),
    ("r2end-cf-residual", "R2END+CF, item residual"),
    ("r2end-cf-history", "R2END+CF, history tower"),
    ("r2end-cf-sequence", "R2END+CF, sequence tower"),
    ("text-cf-residual", "Text path (no teacher) + CF, item residual"),
    ("text-cf-history", "Text path (no teacher) + CF, history tower"),
    ("text-cf-sequence", "Text path (no teacher) + CF, sequence tower"),
    ("r2end-hybrid", "R2END-Hybrid (SASRec-CE + R2END in one inner product)"),
    ("text-hybrid", "Text-Hybrid (SASRec-CE + text path, no teacher, in one inner product)"),
    ("r2end-hybrid-gated", "R2END-Hybrid, text weight gated by history length"),
    ("text-hybrid-gated", "Text-Hybrid, text weight gated by history length (no teacher)"),
    ("r2end-onnx-fp32", "R2END bundle through ONNX Runtime, fp32"),
    ("r2end-onnx-int8", "R2END bundle through ONNX Runtime, int8"),
]
COLD_ROWS = [
    ("r2end-cold", "R2END (paper)"),
    ("r2end-hybrid-cold", "R2END-Hybrid"),
    ("r2end-hybrid-gated-cold", "R2END-Hybrid, gated by history length"),
    ("text-hybrid-cold", "Text-Hybrid (no teacher)"),
    ("text-hybrid-gated-cold", "Text-Hybrid, gated by history length (no teacher)"),
    ("r2end-hybrid-gated-reach-cold", "R2END-Hybrid, gated, new items placed for reach"),
    ("text-hybrid-gated-reach-cold", "Text-Hybrid, gated, new items placed for reach (no teacher)"),
    ("r2end-cf-sequence-cold", "R2END+CF, sequence tower"),
    ("r2end-cf-history-cold", "R2END+CF, history tower"),
    ("r2end-cf-residual-cold", "R2END+CF, item residual"),
    ("abl3-item-target-cold", "(3) no LLM reasoning (target = true item)"),
    ("text-cf-sequence-cold", "Text path (no teacher) + CF, sequence tower"),
    ("text-cf-history-cold", "Text path (no teacher) + CF, history tower"),
    ("text-cf-residual-cold", "Text path (no teacher) + CF, item residual"),
    ("sasrec-ce-cold", "SASRec-CE"),
    ("pop-cold", "Pop"),
]
METADATA_NOTE = "¹ items embedded from metadata only (`item_text=metadata`: no teacher descriptions, by the variant's design or because they are missing)."
TEACHER_ROWS = {
    "r2end",
    "r2end-long-projection",
    "abl1-unguided",
    "abl2-unguided-rs",
    "abl5-no-projection",
    "abl6-no-reg",
    "r2end-cf-residual",
    "r2end-cf-history",
    "r2end-cf-sequence",
    "r2end-cf-sequence-cold",
    "r2end-onnx-fp32",
    "r2end-onnx-int8",
    "r2end-cold",
    "r2end-cf-history-cold",
    "r2end-cf-residual-cold",
    "r2end-hybrid",
    "r2end-hybrid-cold",
    "r2end-hybrid-gated",
    "r2end-hybrid-gated-cold",
    "r2end-hybrid-gated-reach-cold",
}


def _per_user(record: dict[str, Any], metric: str, users: list[int] | None = None) -> np.ndarray:
    per = record["per_user_test"]
    values = np.asarray(per[metric])
    if users is None:
        return values
    index = {u: i for i, u in enumerate(per["users"])}
    return values[[index[u] for u in users]]


class SplitMismatch(ValueError):
    """Two result files to be compared user by user were made on different splits."""


def check_same_split(record: dict[str, Any], reference: dict[str, Any]) -> None:
    """Refuse a paired comparison across splits: user u is then not the same user with the same target."""
    if record.get("split_hash") != reference.get("split_hash"):
        raise SplitMismatch(
            f"cannot compare {record['dataset']}/{record['model']}.json (split {str(record.get('split_hash'))[:12]}) with "
            f"{reference['dataset']}/{reference['model']}.json (split {str(reference.get('split_hash'))[:12]}): different splits; "
            f"re-run the older one on the current data"
        )


def _vs(record: dict[str, Any], reference: dict[str, Any] | None, metric: str = "NDCG@10", users: list[int] | None = None) -> str:
    if reference is None or record is reference:
        return "–"
    check_same_split(record, reference)
    if record["per_user_test"].get("users") != reference["per_user_test"].get("users"):
        return "–"
    test = paired_bootstrap(_per_user(record, metric, users), _per_user(reference, metric, users))
    mark = "" if test["significant"] else " (within noise)"
    ratio = f"{test['ratio']:.2f}×" if np.isfinite(test["ratio"]) else "no ratio (SASRec-CE is 0)"
    return f"{ratio} [{test['ci_low']:+.4f}, {test['ci_high']:+.4f}]{mark}"


def _pending_reason(dataset: str, name: str) -> str:
    """Why a row has no result: a teacher row without any teacher data for its dataset waits for the
    teacher (docs/TEACHER.md); everything else simply has not been run."""
    if name in TEACHER_ROWS and not (teacher_data_dir(dataset) / dataset).is_dir():
        return "pending: no teacher data for this dataset yet"
    return "pending: not run yet"


def main_table(dataset: str, results_root: Path | None = None) -> list[str]:
    """Accuracy table of one dataset."""
    records = {r["model"]: r for r in load_results(dataset, results_root)}
    reference = records.get("sasrec-ce")
    lines = [
        f"### {dataset}",
        "",
        "| model | HR@5 | NDCG@5 | HR@10 | NDCG@10 | tail HR@10 | cov@10 | NDCG@10 vs SASRec-CE, 95% CI of diff | made by |",
        "|---|---:|---:|---:|---:|---:|---:|---|---|",
    ]
    for name, label in MAIN_ROWS + [(n, n) for n in sorted(records) if n not in dict(MAIN_ROWS) and not n.endswith("-cold")]:
        r = records.get(name)
        if r is None:
            lines.append(f"| {label} | {_pending_reason(dataset, name)} |||||||| |")
            continue
        t = r["test"]
        note = _metadata_mark(r)
        if name == "sasrec-ce" and len(r["config"].get("trials", [])) <= 1:
            label = "SASRec-CE (one configuration, not tuned on this dataset)"
        if NOT_CONVERGED in (r.get("notes") or ""):
            note += f" ({NOT_CONVERGED}: epoch {r['config']['best']['max_epochs']})"
        lines.append(
            f"| {label}{note} | {t['HR@5']:.4f} | {t['NDCG@5']:.4f} | {t['HR@10']:.4f} | {t['NDCG@10']:.4f} | {t['tail_HR@10']:.4f} "
            f"| {t['coverage@10']:.3f} | {_vs(r, reference)} | `{r['command']}` @ {_commit(r)} |"
        )
    lines += ["", METADATA_NOTE, ""]
    return lines


def cold_table(dataset: str, results_root: Path | None = None) -> list[str]:
    """All / warm-target / cold-target users under the cold-start protocol."""
    records = {r["model"]: r for r in load_results(dataset, results_root)}
    reference = records.get("sasrec-ce-cold")
    lines = [
        f"### {dataset}, cold-start protocol (10% of items held out of every training stage)",
        "",
        "| model | all HR@10 | all NDCG@10 | warm-target HR@10 | cold-target HR@10 | cold-target NDCG@10 | cold-target HR@10 vs SASRec-CE, 95% CI | made by |",
        "|---|---:|---:|---:|---:|---:|---|---|",
    ]
    for name, label in COLD_ROWS:
        r = records.get(name)
        if r is None:
            lines.append(f"| {label} | {_pending_reason(dataset, name)} ||||||| |")
            continue
        cs, t = r["cold_start"], r["test"]
        cold_users = [u for u in r["per_user_test"]["users"] if u in set(_cold_users(r))]
        lines.append(
            f"| {label}{_metadata_mark(r)} | {t['HR@10']:.4f} | {t['NDCG@10']:.4f} | {cs['warm_target']['HR@10']:.4f} | {cs['cold_target']['HR@10']:.4f} "
            f"| {cs['cold_target']['NDCG@10']:.4f} | {_vs(r, reference, 'HR@10', cold_users) if cold_users else '–'} "
            f"| `{r['command']}` @ {_commit(r)} |"
        )
    lines += ["", METADATA_NOTE, ""]
    return lines


def _metadata_mark(record: dict[str, Any]) -> str:
    """The footnote mark of a row whose items were embedded from metadata only."""
    return " ¹" if record["config"].get("item_text") == "metadata" else ""


def _commit(record: dict[str, Any]) -> str:
    commit = record["git_commit"]
    return commit[:8] + (" (uncommitted changes)" if commit.endswith("+dirty") else "")


def _cold_users(record: dict[str, Any]) -> list[int]:
    return record["cold_start"].get("cold_target_users", [])


PAPER_DATASETS = ("ml-100k", "ml-1m")
"""The datasets docs/RESULTS.md reports."""


def render(datasets: tuple[str, ...] = PAPER_DATASETS, results_root: Path | None = None) -> str:
    """The generated block."""
    lines = [BEGIN, ""]
    for dataset in datasets:
        lines += main_table(dataset, results_root)
    for dataset in datasets:
        lines += cold_table(dataset, results_root)
    lines.append(END)
    return "\n".join(lines)


def write_results_md(path: Path | None = None, results_root: Path | None = None) -> Path:
    """Replace the generated block of docs/RESULTS.md (create the file if needed)."""
    path = path or REPO_ROOT / "docs" / "RESULTS.md"
    block = render(results_root=results_root)
    text = path.read_text() if path.exists() else f"# Results\n\n{BEGIN}\n{END}\n"
    if BEGIN not in text:
        text = text.rstrip() + "\n\n" + BEGIN + "\n" + END + "\n"
    text = re.sub(re.escape(BEGIN) + ".*?" + re.escape(END), lambda _m: block, text, flags=re.DOTALL)
    path.write_text(text)
    return path
