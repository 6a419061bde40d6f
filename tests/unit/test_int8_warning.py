"""The int8 cost in a bundle's manifest (``metrics.int8``, measured at export) and what the service says about it
when started with R2END_USE_INT8; manifests built directly, no torch, no bundle files."""

from __future__ import annotations

import logging
from pathlib import Path

import pytest

from index import bundle as B
from service.model import report_int8_cost

FIELDS = {
    "schema_version": B.SCHEMA_VERSION,
    "bundle_version": "ml-100k-r2end-test",
    "variant": "r2end",
    "encoder": "e",
    "embedding_dim": 8,
    "output_dim": 4,
    "max_seq_length": 16,
    "dataset": "d",
    "split_hash": "s",
    "git_commit": "g",
    "created": "c",
    "n_items": 6,
    "verbaliser": {},
    "files": {},
}


def _cost(fp32: float, int8: float, threshold: float = 0.02) -> dict:
    return {
        "stage": "valid",
        "users": 943,
        "ndcg10_fp32": fp32,
        "ndcg10_int8": int8,
        "relative_loss": (fp32 - int8) / fp32,
        "top10_overlap": 0.91,
        "text_cosine_min": 0.982,
        "text_cosine_mean": 0.996,
        "max_relative_loss": threshold,
        "seconds": 31.0,
    }


def _manifest(int8: dict | None) -> B.Manifest:
    return B.Manifest(**FIELDS, metrics={} if int8 is None else {"int8": int8})


def test_a_big_int8_loss_is_a_startup_warning_that_says_serve_fp32(caplog):
    manifest = _manifest(_cost(0.0458, 0.0434))  # a 5% loss
    assert manifest.int8_cost is not None and manifest.int8_cost.exceeds
    with caplog.at_level(logging.INFO, logger="service.model"):
        warning = report_int8_cost(manifest, Path("/bundles/r2end"))
    assert warning is not None
    assert "loses 5.2%" in warning and "more than the 2.0%" in warning and "serve it in fp32" in warning
    assert "R2END_USE_INT8" in warning and "ml-100k-r2end-test" in warning and "0.0458 -> 0.0434" in warning
    assert [r.levelno for r in caplog.records] == [logging.WARNING] and caplog.records[0].getMessage() == warning


def test_a_small_int8_loss_is_logged_as_information(caplog):
    manifest = _manifest(_cost(0.0413, 0.0410))
    with caplog.at_level(logging.INFO, logger="service.model"):
        assert report_int8_cost(manifest, Path("/bundles/abl3")) is None
    assert [r.levelno for r in caplog.records] == [logging.INFO]
    assert "0.0413 -> 0.0410" in caplog.records[0].getMessage()


def test_the_threshold_is_the_one_export_recorded():
    assert not _manifest(_cost(0.0458, 0.0434, threshold=0.10)).int8_cost.exceeds
    assert _manifest(_cost(0.0458, 0.0450, threshold=0.01)).int8_cost.exceeds
    assert not _manifest(_cost(0.0400, 0.0420)).int8_cost.exceeds  # int8 gained


@pytest.mark.parametrize(
    ("int8", "expected"),
    [(None, "does not say what int8 costs"), ({"users": 3}, "malformed")],
)
def test_an_unmeasured_or_malformed_cost_is_a_warning_too(caplog, int8, expected):
    with caplog.at_level(logging.INFO, logger="service.model"):
        warning = report_int8_cost(_manifest(int8), Path("/bundles/old"))
    assert warning is not None and expected in warning
    assert [r.levelno for r in caplog.records] == [logging.WARNING]
