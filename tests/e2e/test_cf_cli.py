"""R2END+CF through ``r2end train --variant text-cf-sequence --bundle`` on the fixture movies with a tiny encoder:
the result file records every CFConfig field (defaults included), and the bundle carries the sequence tower."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from cli_util import r2end_in_process
from encoder_util import build_tiny_encoder
from locations import MOVIES

from index import bundle as B
from training.r2end.collaborative import CFConfig

DATASET = "my-movies"


def test_a_sequence_tower_run_records_its_whole_cf_config(tmp_path):
    with pytest.MonkeyPatch.context() as env:
        env.setenv("R2END_HOME", str(tmp_path / "home"))
        env.delenv("R2END_TEACHER_DATA", raising=False)
        encoder = build_tiny_encoder(tmp_path / "encoder")
        r2end_in_process("data", "add", DATASET, "--format", "recbole", "--path", str(MOVIES))
        # an untrained tower (no SASRec checkpoint) and two epochs: this checks the plumbing, not the accuracy
        cf = 'cf={"design": "sequence-tower", "epochs": 2, "prefixes_per_user": 3}'
        sets = [cf, f"encoder={encoder}", "projection_epochs=1", "max_seq_length=64", "threads=1"]
        args = ["train", "--dataset", DATASET, "--variant", "text-cf-sequence", "--bundle", str(tmp_path / "bundle")]
        args += ["--results-dir", str(tmp_path / "results")]
        summary = json.loads(r2end_in_process(*args, *[part for value in sets for part in ("--set", value)]))
    recorded = json.loads(Path(summary["result"]).read_text())["config"]["cf"]
    assert recorded == CFConfig(design="sequence-tower", epochs=2, prefixes_per_user=3).model_dump(mode="json")
    assert recorded["tower_pass"] == "per-user"
    assert (Path(summary["bundle"]) / B.HISTORY_ONNX).is_file()
