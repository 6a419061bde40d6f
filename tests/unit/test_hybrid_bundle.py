"""R2END-Hybrid without torch: the arrays file and the manifest's dims are checked on load; SASRec's input rule."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from index import bundle as B
from index.hybrid import HybridUsers, history_weights, sasrec_input, sasrec_positions

H, D, N = 4, 3, 6


def _arrays(trained: np.ndarray | None = None) -> B.HybridArrays:
    rng = np.random.default_rng(0)
    mask = np.array([True, True, False, True, True, True]) if trained is None else trained
    return B.HybridArrays(
        cov_cf=np.eye(H, dtype=np.float32),
        cov_text=np.eye(D, dtype=np.float32),
        mapping=rng.normal(size=(D + 1, H)).astype(np.float32),
        trained=mask,
    )


SPEC = B.HybridSpec(max_len=5, sasrec_dim=H, weight=0.3, bias=1.0)
FIELDS = {
    "schema_version": B.SCHEMA_VERSION,
    "bundle_version": "v",
    "variant": "x",
    "encoder": "e",
    "embedding_dim": 8,
    "output_dim": D,
    "max_seq_length": 16,
    "dataset": "d",
    "split_hash": "s",
    "git_commit": "g",
    "created": "c",
    "n_items": N,
    "verbaliser": {},
    "files": {},
}


def test_arrays_round_trip(tmp_path: Path):
    arrays = _arrays()
    arrays.save(tmp_path / B.HYBRID_ARRAYS)
    loaded = B.HybridArrays.load(tmp_path / B.HYBRID_ARRAYS, SPEC, N, D)
    for name in ("cov_cf", "cov_text", "mapping", "trained"):
        np.testing.assert_array_equal(getattr(loaded, name), getattr(arrays, name))


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"mapping": np.zeros((D, H), dtype=np.float32)}, r"mapping is float32 \(3, 4\), expected \(4, 4\)"),
        ({"cov_cf": np.eye(H + 1, dtype=np.float32)}, "cov_cf is float32"),
        ({"trained": np.ones(N + 1, dtype=bool)}, "trained is bool"),
        ({"trained": np.ones(N, dtype=np.float32)}, "trained is float32"),
        ({"cov_text": np.full((D, D), np.nan, dtype=np.float32)}, "cov_text holds non-finite values"),
    ],
)
def test_inconsistent_arrays_are_refused_naming_the_file(tmp_path: Path, change: dict, message: str):
    arrays = _arrays()
    values = {
        "cov_cf": arrays.cov_cf,
        "cov_text": arrays.cov_text,
        "mapping": arrays.mapping,
        "trained": arrays.trained,
        **change,
    }
    np.savez(tmp_path / B.HYBRID_ARRAYS, **values)
    with pytest.raises(B.BundleError, match=f"{B.HYBRID_ARRAYS}: {message}"):
        B.HybridArrays.load(tmp_path / B.HYBRID_ARRAYS, SPEC, N, D)


def test_a_missing_array_is_refused(tmp_path: Path):
    arrays = _arrays()
    np.savez(tmp_path / B.HYBRID_ARRAYS, cov_cf=arrays.cov_cf, cov_text=arrays.cov_text, trained=arrays.trained)
    with pytest.raises(B.BundleError, match=f"{B.HYBRID_ARRAYS}: no array 'mapping'"):
        B.HybridArrays.load(tmp_path / B.HYBRID_ARRAYS, SPEC, N, D)


def test_index_dim_is_the_text_dim_unless_hybrid():
    assert B.Manifest(**FIELDS).index_dim == D
    assert B.Manifest(**FIELDS, hybrid=SPEC).index_dim == H + D + 1


def test_hybrid_users_refuse_a_bundle_without_the_section(tmp_path: Path):
    with pytest.raises(B.BundleError, match="not an R2END-Hybrid bundle"):
        HybridUsers(tmp_path, B.Manifest(**FIELDS))


def test_sasrec_reads_the_last_max_len_trained_rows_left_padded_to_the_full_length():
    trained = np.array([True, False, True, True, True])
    rows = [4, 1, 0, 7, 2, 3]  # 1 is held out, 7 is beyond the catalogue (added live)
    assert sasrec_positions(rows, trained, 3) == [2, 4, 5]  # rows 0, 2, 3
    assert sasrec_positions(rows, trained, 10) == [0, 2, 4, 5]
    batch = sasrec_input([rows, [1, 7], []], trained, 4)
    np.testing.assert_array_equal(batch, [[5, 1, 3, 4], [0, 0, 0, 0], [0, 0, 0, 0]])
    assert batch.dtype == np.int64


def test_the_history_length_gate_gives_each_bucket_its_weight():
    histories = [[], [1], [1, 2], [1, 2, 3], list(range(10))]
    assert history_weights(histories, 0.3) == 0.3  # no gate: one weight for everyone
    # lengths 0 1 2 3 10 against edges (1, 3]: n <= 1 -> 0.0, 1 < n <= 3 -> 0.5, n > 3 -> 2.0
    np.testing.assert_array_equal(history_weights(histories, 0.3, [1.0, 3.0], [0.0, 0.5, 2.0]), [0.0, 0.0, 0.5, 0.5, 2.0])


@pytest.mark.parametrize(
    ("gate", "message"),
    [
        ({"length_edges": [5.0], "length_weights": [0.1]}, "length_weights has 1 values for 1 length_edges"),
        ({"length_weights": [0.1]}, "length_weights has 1 values for 0 length_edges"),
        ({"length_edges": [5.0, 5.0], "length_weights": [0.1, 0.2, 0.3]}, "must ascend strictly"),
        ({"length_edges": [5.0], "length_weights": [0.1, float("nan")]}, "must be finite"),
    ],
)
def test_an_inconsistent_gate_is_refused(gate: dict, message: str):
    with pytest.raises(ValueError, match=message):
        B.HybridSpec(**{**SPEC.model_dump(), **gate})
    assert B.HybridSpec(**{**SPEC.model_dump(), "length_edges": [5.0], "length_weights": [0.1, 0.2]}).length_edges == [5.0]


def test_a_gated_bundle_is_written_as_version_2_and_others_stay_readable_by_older_readers(tmp_path: Path):
    gated = SPEC.model_copy(update={"length_edges": [5.0], "length_weights": [0.1, 0.2]})
    fields = {k: v for k, v in FIELDS.items() if k not in ("schema_version", "files")}
    (tmp_path / "f").write_bytes(b"x")
    assert B.write_manifest(tmp_path, {**fields, "hybrid": SPEC}).schema_version == 1
    assert B.write_manifest(tmp_path, {**fields, "hybrid": gated}).schema_version == 2
    assert B.write_manifest(tmp_path, fields).schema_version == 1
    assert B.understated_version(B.Manifest(**{**FIELDS, "schema_version": 2, "hybrid": gated})) is None
    assert B.understated_version(B.Manifest(**{**FIELDS, "schema_version": 1, "hybrid": SPEC})) is None


def test_a_gated_bundle_written_as_version_1_is_read_with_its_gate_and_a_note_how_to_mark_it():
    """Gated bundles exported before version 2 existed (e.g. an existing `make demo` bundle) keep working."""
    gated = SPEC.model_copy(update={"length_edges": [5.0], "length_weights": [0.1, 0.2]})
    manifest = B.Manifest(**{**FIELDS, "schema_version": 1, "hybrid": gated})
    assert manifest.hybrid is not None and manifest.hybrid.length_weights == [0.1, 0.2]
    note = B.understated_version(manifest)
    assert note is not None and "older r2end would serve it with one weight" in note and "schema_version to 2" in note


@pytest.mark.parametrize("version", [0, B.SCHEMA_VERSION + 1, "2", True, None])
def test_a_version_this_code_cannot_read_is_refused_naming_it(tmp_path: Path, version: object):
    (tmp_path / B.MANIFEST).write_text(json.dumps({**FIELDS, "schema_version": version}))
    with pytest.raises(B.BundleError, match=f"schema_version {version!r}, this code reads versions 1 to"):
        B.load_manifest(tmp_path)
