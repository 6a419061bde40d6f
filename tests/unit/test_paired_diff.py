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


def _write(root, name, values, split="s1"):
    (root / "toy").mkdir(exist_ok=True)
    record = {
        "dataset": "toy",
        "model": name,
        "split_hash": split,
        "per_user_test": {"users": list(range(len(values))), "NDCG@10": values},
    }
    (root / "toy" / f"{name}.json").write_text(json.dumps(record))


def test_paired_difference_and_split_check(tmp_path):
    _write(tmp_path, "a", [0.5, 0.5, 0.5, 0.5])
    _write(tmp_path, "b", [0.0, 0.0, 0.0, 0.0])
    result = paired_diff("toy", "a", "b", root=tmp_path)
    assert result["diff"] == pytest.approx(0.5) and result["ci_low"] == pytest.approx(0.5) and result["users"] == 4
    _write(tmp_path, "c", [0.0, 0.0, 0.0, 0.0], split="s2")
    with pytest.raises(SplitMismatch):
        paired_diff("toy", "a", "c", root=tmp_path)
