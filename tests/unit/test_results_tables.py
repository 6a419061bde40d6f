"""The generated RESULTS.md tables say why a row is empty: waiting for a teacher that has produced
nothing for the dataset, or simply not run (a row whose teacher data exist is never blamed on the teacher)."""

from __future__ import annotations

from training.evaluation.summary import COLD_ROWS, cold_table, main_table


def _row(lines: list[str], label: str) -> str:
    return next(line for line in lines if line.startswith(f"| {label} |"))


def test_a_pending_row_names_the_teacher_only_when_the_dataset_has_no_teacher_data(tmp_path, monkeypatch):
    monkeypatch.setenv("R2END_TEACHER_DATA", str(tmp_path / "teacher"))
    results = tmp_path / "results"  # no result files: every row pending
    teacher_row, plain_row = (
        "R2END-Hybrid, text weight gated by history length",
        "Text-Hybrid, text weight gated by history length (no teacher)",
    )
    assert "pending: no teacher data for this dataset yet" in _row(main_table("ml-1m", results), teacher_row)
    assert "pending: not run yet" in _row(main_table("ml-1m", results), plain_row)

    (tmp_path / "teacher" / "ml-1m").mkdir(parents=True)  # the teacher has written for this dataset: the row is simply not run
    assert "pending: not run yet" in _row(main_table("ml-1m", results), teacher_row)
    reach = dict(COLD_ROWS)["r2end-hybrid-gated-reach-cold"]
    assert "pending: not run yet" in _row(cold_table("ml-1m", results), reach)
