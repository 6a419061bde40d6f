"""scripts/paired_diff.py, which RESULTS.md's text cites for its paired CIs: the difference over the same users, refused
across splits."""

from __future__ import annotations

import json
import sys

import pytest
from locations import REPO

sys.path.insert(0, str(REPO / "scripts"))
from paired_diff import paired_diff

from training.evaluation.summary import SplitMismatch


def _write(root, name, values, split="s1", cold_users=None):
    (root / "toy").mkdir(exist_ok=True)
    record = {
        "dataset": "toy",
        "model": name,
        "split_hash": split,
        "per_user_test": {"users": list(range(len(values))), "NDCG@10": values},
    }
    if cold_users is not None:
        record["cold_start"] = {"cold_target_users": cold_users}
    (root / "toy" / f"{name}.json").write_text(json.dumps(record))


def test_paired_difference_and_split_check(tmp_path):
    _write(tmp_path, "a", [0.5, 0.5, 0.5, 0.5])
    _write(tmp_path, "b", [0.0, 0.0, 0.0, 0.0])
    result = paired_diff("toy", "a", "b", root=tmp_path)
    assert result["diff"] == pytest.approx(0.5) and result["ci_low"] == pytest.approx(0.5) and result["users"] == 4
    _write(tmp_path, "c", [0.0, 0.0, 0.0, 0.0], split="s2")
    with pytest.raises(SplitMismatch):
        paired_diff("toy", "a", "c", root=tmp_path)


def test_paired_difference_on_cold_or_warm_targets_only(tmp_path):
    _write(tmp_path, "a", [1.0, 1.0, 0.0, 0.0], cold_users=[0, 1])
    _write(tmp_path, "b", [0.0, 0.0, 1.0, 1.0], cold_users=[0, 1])
    cold = paired_diff("toy", "a", "b", root=tmp_path, targets="cold")
    warm = paired_diff("toy", "a", "b", root=tmp_path, targets="warm")
    assert cold["users"] == 2 and cold["diff"] == pytest.approx(1.0)
    assert warm["users"] == 2 and warm["diff"] == pytest.approx(-1.0)
    assert paired_diff("toy", "a", "b", root=tmp_path)["diff"] == pytest.approx(0.0)
    _write(tmp_path, "other-items", [0.0, 0.0, 1.0, 1.0], cold_users=[0, 2])
    with pytest.raises(ValueError, match="different items"):
        paired_diff("toy", "a", "other-items", root=tmp_path, targets="cold")
    _write(tmp_path, "warm-protocol", [0.0, 0.0, 1.0, 1.0])
    with pytest.raises(ValueError, match="cold-start protocol"):
        paired_diff("toy", "a", "warm-protocol", root=tmp_path, targets="warm")
