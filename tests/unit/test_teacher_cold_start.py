"""``r2end teach run/status --cold-start``: under the cold-start protocol the teacher's prompts are built from the
training view (held-out items removed), so they must be the very tasks a cold-start training asks for; before this
option existed, `r2end ablations --cold-start` refused with a command that generated the full data's prompts again."""

from __future__ import annotations

import re

import pytest
from cli_util import r2end
from locations import MOVIES

from training.data.registry import load_dataset
from training.evaluation.coldstart import pick_cold_items, training_view
from training.r2end.config import R2ENDConfig
from training.r2end.teacher_data import TeacherDataIncomplete, require_teacher_data

SHARE = 0.2


def _totals(stdout: str) -> dict[str, int]:
    """``{kind: total}`` from `r2end teach status`'s table."""
    return {kind: int(total) for kind, total in re.findall(r"(oracle|description|unguided)\D+\d+/(\d+)", stdout)}


@pytest.mark.parametrize("seed", [None, 5])
def test_teach_status_cold_start_counts_the_tasks_a_cold_start_training_needs(tmp_path, seed):
    base = ["teach", "status", "movies", "--format", "recbole", "--path", str(MOVIES), "--data-dir", str(tmp_path / "t")]
    full = r2end(*base, tmp_path=tmp_path)
    extra = ["--cold-start", str(SHARE)] + ([] if seed is None else ["--cold-seed", str(seed)])
    cold = r2end(*base, *extra, tmp_path=tmp_path)
    assert full.returncode == 0 and cold.returncode == 0, full.stdout + full.stderr + cold.stdout + cold.stderr
    assert "cold-start protocol (0.2 of the items held out)" in cold.stdout.replace("\n", " ")

    ds = load_dataset("movies", "recbole", MOVIES)
    config = R2ENDConfig(dataset="movies", cold_start_share=SHARE, **({} if seed is None else {"seed": seed}))
    view = training_view(ds, pick_cold_items(ds, SHARE, config.seed))  # what training.r2end.run checks and reads
    with pytest.raises(TeacherDataIncomplete) as refused:
        require_teacher_data(config, view, tmp_path / "t")
    needed = {kind: int(n) for kind, n in re.findall(r"(oracle|description): 0 usable of (\d+) needed", str(refused.value))}
    assert needed and {kind: _totals(cold.stdout)[kind] for kind in needed} == needed
    assert _totals(full.stdout)["oracle"] > needed["oracle"]  # the view drops users: a status ignoring the flag fails here
    command = f"r2end teach run movies --kinds description,oracle --cold-start {SHARE:g}"
    assert command + ("" if seed is None else f" --cold-seed {seed}") + "`" in str(refused.value)
