"""The exported text graphs: fused where ONNX Runtime can fuse them, equal to PyTorch either way."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from training import onnx_graphs
from training.encoders import load_encoder
from training.r2end.projection import Projection

TEXTS = ["2024-01-03 Star Wars (1977) Action|Adventure|Sci-Fi", "a short one", "Fargo (1996) Crime|Drama|Thriller; Heat (1995)"]


@pytest.fixture(scope="module")
def encoder_and_projection():
    torch.manual_seed(0)
    encoder = load_encoder("all-MiniLM-L6-v2")
    encoder.max_seq_length = 64
    return encoder, Projection(384, 32).eval()


def _torch_vectors(encoder, projection) -> np.ndarray:
    with torch.no_grad():
        pooled = torch.from_numpy(encoder.encode(TEXTS, normalize_embeddings=True))
        return torch.nn.functional.normalize(projection(pooled), dim=-1).numpy()


def _onnx_vectors(encoder, path) -> np.ndarray:
    tokens = encoder.tokenizer(TEXTS, padding=True, truncation=True, max_length=encoder.max_seq_length, return_tensors="np")
    return onnx_graphs._run(path, tokens["input_ids"].astype(np.int64), tokens["attention_mask"].astype(np.int64))


def test_the_fused_graph_has_the_fused_kernels_and_matches_pytorch(tmp_path, encoder_and_projection):
    encoder, projection = encoder_and_projection
    info = onnx_graphs.export_graph(encoder, projection, tmp_path / "user.onnx", fuse=True, check_texts=TEXTS)
    assert info["fused"] is True
    assert info["fused_ops"].get("Attention") == 6 and info["fused_ops"].get("SkipLayerNormalization") == 12
    assert np.abs(_onnx_vectors(encoder, tmp_path / "user.onnx") - _torch_vectors(encoder, projection)).max() < 1e-5
    onnx_graphs.quantize_int8(tmp_path / "user.onnx", tmp_path / "user.int8.onnx")  # contrib ops quantise too
    int8 = _onnx_vectors(encoder, tmp_path / "user.int8.onnx")
    assert (int8 * _torch_vectors(encoder, projection)).sum(1).min() > 0.95


def test_a_fused_graph_that_does_not_match_is_not_kept(tmp_path, encoder_and_projection, monkeypatch):
    encoder, projection = encoder_and_projection
    monkeypatch.setattr(onnx_graphs, "FUSION_TOLERANCE", -1.0)  # nothing can match
    info = onnx_graphs.export_graph(encoder, projection, tmp_path / "user.onnx", fuse=True, check_texts=TEXTS)
    assert info["fused"] is False and info["fused_max_abs_diff"] >= 0
    assert not (tmp_path / "user.fused.onnx").exists()
    assert np.abs(_onnx_vectors(encoder, tmp_path / "user.onnx") - _torch_vectors(encoder, projection)).max() < 1e-5
