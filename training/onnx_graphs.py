"""ONNX graphs of a bundle: token ids -> normalised vector (one graph per side), the CF tower, SASRec, int8.

One graph per side takes token ids and returns the final normalised vector, i.e. transformer
+ mean pooling + normalisation + projection + normalisation: optimum exports only the
transformer, and optimum-onnx 0.1 would also pin transformers < 4.58 (see pyproject).

**Fused graphs.** ONNX Runtime's transformer optimizer replaces BERT-style subgraphs with fused
kernels (Attention, SkipLayerNormalization, EmbedLayerNormalization, BiasGelu) only where it
recognises them. It finds no attention and no skip-layer-norm in the dynamo exporter's output,
nor the attention in the TorchScript exporter's output of the SDPA attention path. Exported
with the transformer's *eager* attention by the TorchScript exporter, MiniLM-L6 fuses fully
(6 Attention, 12 SkipLayerNormalization, 1 EmbedLayerNormalization, 6 BiasGelu) at a max abs
difference of ~1e-7 and runs faster (measured by ``scripts/bench_service.py --fusion`` and the
raw rows of the service benchmark). The fused graph is kept only if it matches the unfused one
on the parity texts; otherwise the unfused graph is written and the manifest says so.
"""

from __future__ import annotations

import contextlib
import logging
import warnings
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from training.r2end.projection import Projection

log = logging.getLogger(__name__)

OPSET = 18
FUSED_OPSET = 17
"""The TorchScript exporter's opset for the fused path (ORT's fusions are tested on it)."""
FUSION_TOLERANCE = 1e-4
"""Largest |fused - unfused| accepted on the parity texts (fused kernels differ by ~1e-7)."""


class EncoderGraph(nn.Module):
    """Token ids -> normalised (projected) embedding, mirroring the SentenceTransformer pipeline."""

    def __init__(self, sentence_transformer: Any, projection: Projection | None):
        super().__init__()
        self.transformer = sentence_transformer[0].auto_model
        pooling = sentence_transformer[1]
        if getattr(pooling, "pooling_mode", "mean") not in ("mean", None) and not getattr(
            pooling, "pooling_mode_mean_tokens", True
        ):
            raise ValueError("only mean pooling is exported")
        self.projection = projection

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        hidden = self.transformer(
            input_ids=input_ids, attention_mask=attention_mask, token_type_ids=torch.zeros_like(input_ids)
        ).last_hidden_state
        mask = attention_mask.unsqueeze(-1).to(hidden.dtype)
        pooled = (hidden * mask).sum(1) / mask.sum(1).clamp(min=1e-9)
        pooled = nn.functional.normalize(pooled, dim=-1)
        if self.projection is not None:
            pooled = nn.functional.normalize(self.projection(pooled), dim=-1)
        return pooled


def _quiet_exporter() -> contextlib.AbstractContextManager:
    """The exporters' notes and deprecation warnings show only with debug logging (``--verbose``)."""
    if log.isEnabledFor(logging.DEBUG):
        return contextlib.nullcontext()
    stack = contextlib.ExitStack()
    stack.enter_context(warnings.catch_warnings())
    warnings.simplefilter("ignore")
    return stack


def _export_dynamo(graph: EncoderGraph, max_length: int, path: Path) -> None:
    ids = torch.ones((2, 16), dtype=torch.long)
    batch, seq = torch.export.Dim("batch", min=1, max=4096), torch.export.Dim("sequence", min=1, max=max_length)
    with torch.no_grad(), _quiet_exporter():
        torch.onnx.export(
            graph,
            (ids, ids.clone()),
            str(path),
            input_names=["input_ids", "attention_mask"],
            output_names=["vector"],
            dynamic_shapes={"input_ids": {0: batch, 1: seq}, "attention_mask": {0: batch, 1: seq}},
            opset_version=OPSET,
            dynamo=True,
            external_data=False,
            verbose=None if log.isEnabledFor(logging.DEBUG) else False,
        )


@contextlib.contextmanager
def _eager_attention(transformer: nn.Module) -> Iterator[None]:
    config = transformer.config
    previous = getattr(config, "_attn_implementation", None)
    config._attn_implementation = "eager"
    try:
        yield
    finally:
        config._attn_implementation = previous


def _export_fused(graph: EncoderGraph, path: Path) -> dict[str, int]:
    """TorchScript export with eager attention, then ONNX Runtime's transformer optimizer."""
    from onnxruntime.transformers.optimizer import optimize_model

    ids = torch.ones((2, 16), dtype=torch.long)
    axes = {"input_ids": {0: "batch", 1: "sequence"}, "attention_mask": {0: "batch", 1: "sequence"}, "vector": {0: "batch"}}
    with torch.no_grad(), _quiet_exporter(), _eager_attention(graph.transformer):
        torch.onnx.export(
            graph,
            (ids, ids.clone()),
            str(path),
            input_names=["input_ids", "attention_mask"],
            output_names=["vector"],
            dynamic_axes=axes,
            opset_version=FUSED_OPSET,
            dynamo=False,
        )
    config = graph.transformer.config
    with _quiet_exporter(), _quiet_logger("onnxruntime.transformers"):
        optimized = optimize_model(
            str(path), model_type="bert", num_heads=config.num_attention_heads, hidden_size=config.hidden_size, opt_level=0
        )
        optimized.save_model_to_file(str(path))
    return {k: int(v) for k, v in optimized.get_fused_operator_statistics().items() if v}


@contextlib.contextmanager
def _quiet_logger(name: str) -> Iterator[None]:
    logger = logging.getLogger(name)
    level = logger.level
    if not log.isEnabledFor(logging.DEBUG):
        logger.setLevel(logging.ERROR)
    try:
        yield
    finally:
        logger.setLevel(level)


def _run(path: Path, ids: np.ndarray, mask: np.ndarray) -> np.ndarray:
    import onnxruntime as ort

    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    return session.run(None, {"input_ids": ids, "attention_mask": mask})[0]


def export_graph(
    model: Any, projection: Projection | None, path: Path, fuse: bool = True, check_texts: list[str] | None = None
) -> dict[str, Any]:
    """Write one ONNX graph with dynamic batch and sequence axes; returns how it was made.

    With ``fuse``, the fused graph replaces the plain one only if it matches it on
    ``check_texts`` (tokenised with the model's tokenizer) within :data:`FUSION_TOLERANCE`.
    """
    graph = EncoderGraph(model, projection).eval()
    _export_dynamo(graph, model.max_seq_length, path)
    if not fuse:
        return {"fused": False}
    fused_path = path.with_name(path.stem + ".fused.onnx")
    try:
        fused_ops = _export_fused(graph, fused_path)
        texts = check_texts or ["a short text", "a somewhat longer text with more words in it, to pad the batch"]
        tokens = model.tokenizer(texts, padding=True, truncation=True, max_length=model.max_seq_length, return_tensors="np")
        ids, mask = tokens["input_ids"].astype(np.int64), tokens["attention_mask"].astype(np.int64)
        diff = float(np.abs(_run(fused_path, ids, mask) - _run(path, ids, mask)).max())
    except Exception as exc:  # noqa: BLE001 - an encoder the optimizer cannot handle keeps the plain graph
        log.warning("fused export failed (%s: %s); keeping the unfused graph", type(exc).__name__, exc)
        fused_path.unlink(missing_ok=True)
        return {"fused": False, "fusion_error": f"{type(exc).__name__}: {exc}"[:300]}
    if not fused_ops or diff > FUSION_TOLERANCE:
        log.warning("fused graph rejected (fused ops %s, max abs diff %.2e); keeping the unfused graph", fused_ops, diff)
        fused_path.unlink(missing_ok=True)
        return {"fused": False, "fused_ops": fused_ops, "fused_max_abs_diff": diff}
    fused_path.replace(path)
    log.info("fused graph %s: %s (max abs diff vs unfused %.1e)", path.name, fused_ops, diff)
    return {"fused": True, "fused_ops": fused_ops, "fused_max_abs_diff": diff}


def export_tower(tower: nn.Module, path: Path) -> None:
    """R2END+CF sequence tower: left-padded item rows + 1 (B, L) -> (B, d)."""
    tower = tower.eval()
    sample = torch.ones((2, 8), dtype=torch.long)
    batch, seq = torch.export.Dim("batch", min=1, max=4096), torch.export.Dim("sequence", min=1, max=tower.net.config.max_len)
    with torch.no_grad(), _quiet_exporter():
        torch.onnx.export(
            tower,
            (sample,),
            str(path),
            input_names=["history"],
            output_names=["term"],
            dynamic_shapes={"sequence": {0: batch, 1: seq}},
            opset_version=OPSET,
            dynamo=True,
            external_data=False,
            verbose=None if log.isEnabledFor(logging.DEBUG) else False,
        )


class LastHidden(nn.Module):
    """SASRec's last hidden state h_u: left-padded item rows + 1 (B, max_len) -> (B, H) (R2END-Hybrid's user side)."""

    def __init__(self, net: nn.Module):
        super().__init__()
        self.net = net

    def forward(self, sequence: torch.Tensor) -> torch.Tensor:
        return self.net(sequence)[:, -1, :]


def export_sasrec(net: nn.Module, path: Path) -> None:
    """R2END-Hybrid's SASRec graph with a dynamic batch and the sequence length fixed at ``max_len``
    (positions count from the left edge, so every input is padded to the full length)."""
    graph = LastHidden(net).eval()
    max_len = net.config.max_len
    sample = torch.ones((2, max_len), dtype=torch.long)
    batch = torch.export.Dim("batch", min=1, max=4096)
    with torch.no_grad(), _quiet_exporter():
        torch.onnx.export(
            graph,
            (sample,),
            str(path),
            input_names=["history"],
            output_names=["hidden"],
            dynamic_shapes={"sequence": {0: batch}},
            opset_version=OPSET,
            dynamo=True,
            external_data=False,
            verbose=None if log.isEnabledFor(logging.DEBUG) else False,
        )


def quantize_int8(source: Path, target: Path) -> None:
    """Dynamic int8 quantisation: weights per output channel, activations per batch at run time.

    Per-channel weight scales matter: with one scale per tensor the ML-100K text-path model lost
    23% of its test NDCG@10 (0.0413 -> 0.0318); per channel it keeps it (0.0413). See docs/SERVICE.md.
    ``DefaultTensorType``: shape inference cannot type the outputs of fused contrib ops
    (Attention, SkipLayerNormalization); they are float.
    """
    from onnx import TensorProto
    from onnxruntime.quantization import QuantType, quantize_dynamic

    with _quiet_exporter(), _quiet_logger("root"):
        quantize_dynamic(
            str(source),
            str(target),
            weight_type=QuantType.QInt8,
            per_channel=True,
            extra_options={"DefaultTensorType": TensorProto.FLOAT},
        )
