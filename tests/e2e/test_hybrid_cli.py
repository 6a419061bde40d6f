"""R2END-Hybrid through the documented commands: ``r2end train --variant text-hybrid --bundle`` -> ``r2end evaluate`` ->
``r2end export`` (from the run folder) -> the service's model, on the fixture movies with a tiny encoder.

SASRec-CE is the real ``auto`` path (its default configuration trained on the data, kept out of nothing: no cold
start); the w and b grids are cut to two values each to stay quick.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
from cli_util import r2end_in_process
from encoder_util import build_tiny_encoder
from locations import MOVIES

from index import bundle as B
from index.hybrid import HybridUsers
from training.r2end.hybrid import choose_new_item_form

DATASET = "my-movies"
GRIDS = 'hybrid={"weights": [0.0, 0.5], "new_item_biases": [0.0, 1.0], "new_item_rule": "reach", "pseudo_new_share": 0.5}'


@pytest.fixture(scope="module")
def trained(tmp_path_factory) -> Iterator[tuple[Path, dict]]:
    tmp = tmp_path_factory.mktemp("hybrid-cli")
    with pytest.MonkeyPatch.context() as env:  # an empty R2END_HOME: the added dataset, its run, results and SASRec checkpoint
        env.setenv("R2END_HOME", str(tmp / "home"))
        env.delenv("R2END_TEACHER_DATA", raising=False)
        encoder = build_tiny_encoder(tmp / "encoder")
        r2end_in_process("data", "add", DATASET, "--format", "recbole", "--path", str(MOVIES))
        # `--variant text-hybrid` brings text-hybrid's settings (no teacher data: item targets, metadata item text)
        sets = [GRIDS, f"encoder={encoder}", "projection_epochs=1", "max_seq_length=64"]
        args = ["train", "--dataset", DATASET, "--variant", "text-hybrid", "--bundle", str(tmp / "bundle")]
        args += ["--results-dir", str(tmp / "results")]  # as make demo passes it
        summary = json.loads(r2end_in_process(*args, *[part for value in [*sets, "threads=1"] for part in ("--set", value)]))
        yield tmp, summary


def test_train_writes_its_result_where_results_dir_says(trained):
    tmp, summary = trained
    assert Path(summary["result"]) == tmp / "results" / DATASET / "text-hybrid.json"
    assert json.loads(Path(summary["result"]).read_text())["model"] == "text-hybrid"
    assert not (tmp / "home" / "results" / DATASET / "text-hybrid.json").exists(), "also written to the default folder"


def test_train_exports_a_hybrid_bundle_that_matches_torch(trained):
    _, summary = trained
    manifest = B.load_manifest(Path(summary["bundle"]))
    assert manifest.variant == "text-hybrid" and manifest.hybrid is not None
    assert manifest.hybrid.weight in (0.0, 0.5) and manifest.hybrid.bias in (0.0, 1.0)
    assert summary["onnx_parity"]["sasrec_max_abs_diff"] < 1e-4 and summary["onnx_parity"]["hybrid_user_max_abs_diff"] < 1e-4
    evaluated = json.loads(r2end_in_process("evaluate", summary["bundle"], "--no-write"))  # the bundle through ONNX Runtime
    for metric in ("HR@10", "NDCG@10"):
        assert evaluated[metric] == pytest.approx(summary["test"][metric], abs=1e-3)
    cost = manifest.int8_cost  # measured at export through SASRec's graph too, as served
    assert cost is not None and cost.stage == "valid" and cost.users >= 1 and 0 <= cost.top10_overlap <= 1
    assert cost.ndcg10_fp32 == pytest.approx(summary["valid"]["NDCG@10"], abs=1e-3)


def test_new_items_are_placed_by_the_rule_the_config_names(trained):
    """``reach``: the text path's pseudo-new hit rate measured on validation (on a text path refit without the
    pseudo-new items), and (c, b) chosen from the logged grid by it."""
    _, summary = trained
    log = json.loads(Path(summary["result"]).read_text())["training_log"]
    grid = [row for row in log if row.get("stage") == "new items"]
    floors = [row for row in log if row.get("stage") == "reach floor"]
    assert len(grid) == 2 * 4 and len(floors) == 1  # b x c candidates; half the items pseudo-new: some validation targets
    # the default probe: the grid's text path never learned them, and the result file says so
    assert json.loads(Path(summary["result"]).read_text())["config"]["hybrid"]["pseudo_new_projection"] == "held-out"
    refit = [row for row in log if row.get("stage") == "pseudo-new projection"]
    assert len(refit) == 1 and refit[0]["held_out_items"] >= 1 and refit[0]["epochs"] == 1
    floor = floors[0]["floor"]
    assert floor == pytest.approx(0.9 * floors[0]["text_pseudo_new_target_HR@10"], abs=1e-5)
    chosen = choose_new_item_form(grid, "reach", floor)
    hybrid = B.load_manifest(Path(summary["bundle"])).hybrid
    assert (hybrid.text_scale, hybrid.bias) == (chosen["c"], chosen["b"])


def test_export_from_the_run_folder_writes_the_same_hybrid_bundle(trained):
    tmp, summary = trained
    again = tmp / "exported"
    r2end_in_process("export", "--dataset", DATASET, "--variant", "text-hybrid", "--bundle", str(again), "--no-int8")
    first, second = B.load_manifest(Path(summary["bundle"])), B.load_manifest(again)
    assert second.hybrid == first.hybrid
    np.testing.assert_allclose(np.load(again / B.ITEM_VECTORS), np.load(Path(summary["bundle"]) / B.ITEM_VECTORS), atol=1e-6)
    assert second.files[B.HYBRID_ARRAYS] == first.files[B.HYBRID_ARRAYS]
    histories = [[0, 1, 2], list(range(first.n_items))]
    hidden = [
        HybridUsers(path, manifest).hidden(histories) for path, manifest in ((Path(summary["bundle"]), first), (again, second))
    ]
    np.testing.assert_allclose(hidden[0], hidden[1], atol=1e-5)  # the same SASRec (the graph's bytes may differ)


def test_the_service_serves_the_trained_bundle(trained):
    from service.model import ServingModel
    from service.settings import ServiceSettings

    _, summary = trained
    bundle = Path(summary["bundle"])
    serving = ServingModel.load(bundle, ServiceSettings(bundle_path=bundle, warmup=False))
    serving.warmup()  # runs SASRec's graph and searches with a hybrid user vector
    vector = serving.add_history(serving.user_encoder.encode(["a history"]), [[0, 1, 2]])
    hits = serving.search(vector, [5], [frozenset()])[0]
    assert len(hits) == 5 and hits == sorted(hits, key=lambda hit: -hit.score)
