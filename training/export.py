"""Export a trained R2END model and write the model bundle.

The ONNX graphs themselves (one per side, fused where ONNX Runtime can fuse them, the CF
tower, int8) are made by :mod:`training.onnx_graphs`. Parity with PyTorch is measured on
real texts at export time and stored in the manifest, with how each graph was made. When the int8
user graph is written, what it costs is measured too (:func:`measure_int8_cost`: validation NDCG@10
and top-10 agreement against fp32, scored as served) and stored as ``metrics.int8``.
"""

from __future__ import annotations

import logging
import shutil
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
from pydantic import BaseModel, ConfigDict, Field
from torch import nn

from index import bundle as B
from index.catalog import Catalog
from index.faiss_index import ItemIndex, recall_at_k
from index.onnx_encoder import OnnxTextEncoder
from training.data.preprocess import PreparedDataset
from training.onnx_graphs import OPSET, export_graph, export_sasrec, export_tower, quantize_int8
from training.provenance import git_commit
from training.r2end.pipeline import TrainedR2END

if TYPE_CHECKING:
    from collections.abc import Sequence

    from training.r2end.bundle_scorer import BundleScorer
    from training.r2end.hybrid import HybridModel

log = logging.getLogger(__name__)


class Int8Check(BaseModel):
    """How export measures the int8 user graph against fp32 (stored as ``metrics.int8``, :class:`index.bundle.Int8Cost`)."""

    model_config = ConfigDict(frozen=True)

    users: int = Field(
        1000,
        ge=0,
        description="validation users scored in each precision: all of them up to this many, else a seeded sample "
        "(ML-100K's 943 all fit); 0 = do not measure",
    )
    max_relative_loss: float = Field(
        0.02, ge=0, description="warn (serve fp32) when int8 loses more than this share of validation NDCG@10"
    )
    seed: int = 0


def torch_reference(model: TrainedR2END, texts: list[str], student: bool = True) -> np.ndarray:
    """The PyTorch pipeline's vectors for texts (for parity checks)."""
    from training.r2end.pipeline import encode
    from training.r2end.projection import project

    encoder = model.student if student else model.encoder
    return project(model.projection, encode(encoder, texts))


def export_bundle(
    model: TrainedR2END,
    ds: PreparedDataset,
    out_dir: Path,
    metrics: dict[str, Any] | None = None,
    int8: bool = True,
    index_kind: str = "flat",
    parity_texts: list[str] | None = None,
    history_table: np.ndarray | None = None,
    history_items: int = 50,
    tower: nn.Module | None = None,
    fuse: bool = True,
    hybrid: HybridModel | None = None,
    int8_check: Int8Check | None = None,
) -> B.Manifest:
    """Write a complete, checksummed bundle to ``out_dir`` (atomically replaced) and return its manifest.

    ``fuse``: write the text graphs with ONNX Runtime's transformer fusions where they match the
    plain graphs (see :mod:`training.onnx_graphs`); the manifest records what each graph is.

    ``history_table`` (R2END+CF history tower) adds per-item history embeddings that the
    service averages over a request's last ``history_items`` known items and adds to z_u.

    ``hybrid`` (R2END-Hybrid, whose text path is ``model``): the index holds its vectors, and
    SASRec's graph and the arrays of the inner product join the bundle (:mod:`index.hybrid`).

    ``int8_check`` (default :class:`Int8Check`): with ``int8``, how the int8 graph's cost is measured
    on validation users (``metrics.int8``); a loss above its threshold is logged as a warning.
    """
    if hybrid is not None and (history_table is not None or tower is not None):
        raise ValueError("a bundle is R2END+CF or R2END-Hybrid, not both")
    out_dir = Path(out_dir)
    tmp = out_dir.with_name(out_dir.name + ".partial")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    started = time.perf_counter()
    Catalog(ds.catalog).save_jsonl(tmp / B.CATALOG)
    item_vectors = (model.item_vectors if hybrid is None else hybrid.item_vectors).astype(np.float32)
    np.save(tmp / B.ITEM_VECTORS, item_vectors)
    index = ItemIndex.build(item_vectors, index_kind, normalise_items=hybrid is None)  # hybrid vectors are scores, not directions
    index.save(tmp / B.ITEM_INDEX)
    index_metrics: dict[str, float] = {}
    if index_kind != "flat":  # how much the approximate index loses against exact search
        queries = item_vectors[np.random.default_rng(0).choice(len(item_vectors), min(500, len(item_vectors)), replace=False)]
        index_metrics["index_recall@10_vs_exact"] = recall_at_k(
            index, ItemIndex.build(item_vectors, "flat", normalise_items=hybrid is None), queries, 10
        )
    log.info("export: user and item graphs (ONNX opset %d)", OPSET)
    parity_texts = parity_texts or model.item_documents[:32]
    graphs = {
        "user": export_graph(model.student, model.projection, tmp / B.USER_ONNX, fuse, parity_texts),
        "item": export_graph(model.encoder, model.projection, tmp / B.ITEM_ONNX, fuse, parity_texts),
    }
    model.student.tokenizer.backend_tokenizer.save(str(tmp / B.TOKENIZER))
    if int8:
        log.info("export: int8 user graph")
        quantize_int8(tmp / B.USER_ONNX, tmp / B.USER_ONNX_INT8)
    history = None
    if history_table is not None:
        np.save(tmp / B.HISTORY_EMBEDDINGS, history_table.astype(np.float32))
        history = {"kind": "mean", "file": B.HISTORY_EMBEDDINGS, "max_items": history_items}
    if tower is not None:
        export_tower(tower, tmp / B.HISTORY_ONNX)
        history = {
            "kind": "sequence",
            "file": B.HISTORY_ONNX,
            "max_items": tower.net.config.max_len,
            "trained_items": len(ds.catalog),
        }
    parity = measure_parity(model, tmp, parity_texts)
    hybrid_spec = None
    if hybrid is not None:
        log.info("export: R2END-Hybrid's SASRec graph and arrays")
        export_sasrec(hybrid.net, tmp / B.SASREC_ONNX)
        B.HybridArrays(hybrid.cov_cf, hybrid.cov_text, hybrid.mapping, hybrid.trained).save(tmp / B.HYBRID_ARRAYS)
        hybrid_spec = B.HybridSpec(
            max_len=hybrid.net.config.max_len,
            sasrec_dim=hybrid.net.config.hidden,
            weight=hybrid.weight,
            length_edges=list(hybrid.length_edges),
            length_weights=list(hybrid.length_weights),
            bias=hybrid.bias,
            text_scale=hybrid.text_scale,
        )
        parity.update(measure_hybrid_parity(hybrid, ds, tmp, hybrid_spec))
    log.info("export: ONNX vs PyTorch %s", parity)
    cfg = model.config
    fingerprint = f"{ds.name}-{cfg.variant}-{cfg.fingerprint()}-{time.strftime('%Y%m%dT%H%M%SZ', time.gmtime())}"
    fields: dict[str, Any] = {
        "bundle_version": fingerprint,
        "variant": cfg.variant,
        "encoder": cfg.encoder,
        "embedding_dim": int(model.item_embeddings.shape[1]),
        "output_dim": int(model.item_vectors.shape[1]),
        "max_seq_length": int(cfg.max_seq_length),
        "index_kind": index_kind,
        "dataset": ds.name,
        "split_hash": ds.split_hash,
        "git_commit": git_commit(),
        "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "n_items": len(ds.catalog),
        "verbaliser": cfg.verbaliser,
        "metrics": {
            **(metrics or {}),
            **index_metrics,
            "onnx_parity": parity,
            "onnx_graphs": graphs,
            "export_seconds": round(time.perf_counter() - started, 1),
        },
        "config": cfg.model_dump(),
        "history_tower": history,
        "hybrid": hybrid_spec,
    }
    manifest = B.write_manifest(tmp, fields)
    check = int8_check or Int8Check()
    if int8 and check.users > 0:  # scored through the bundle as written, so after its manifest (and then again with the cost)
        cost = measure_int8_cost(tmp, ds, check, cfg.threads)
        fields["metrics"]["int8"] = cost.model_dump()
        fields["metrics"]["export_seconds"] = round(time.perf_counter() - started, 1)
        manifest = B.write_manifest(tmp, fields)
    if out_dir.exists():
        old = out_dir.with_name(out_dir.name + ".old")
        shutil.rmtree(old, ignore_errors=True)
        out_dir.rename(old)
        tmp.rename(out_dir)
        shutil.rmtree(old, ignore_errors=True)
    else:
        tmp.rename(out_dir)
    return manifest


def measure_parity(model: TrainedR2END, bundle_dir: Path, texts: list[str]) -> dict[str, float]:
    """Max |ONNX - PyTorch| over ``texts`` for the user graph (fp32, int8) and the item graph."""
    cfg = model.config
    result: dict[str, float] = {"n_texts": len(texts)}
    user_ref = torch_reference(model, texts, student=True)
    item_ref = torch_reference(model, texts, student=False)
    for name, path, ref in (
        ("user_fp32", B.USER_ONNX, user_ref),
        ("item_fp32", B.ITEM_ONNX, item_ref),
        ("user_int8", B.USER_ONNX_INT8, user_ref),
    ):
        if not (bundle_dir / path).exists():
            continue
        onnx = OnnxTextEncoder(bundle_dir / path, bundle_dir / B.TOKENIZER, cfg.max_seq_length, threads=cfg.threads).encode(texts)
        result[f"{name}_max_abs_diff"] = float(np.abs(onnx - ref).max())
        result[f"{name}_min_cosine"] = float((onnx * ref).sum(1).min())
    return result


def measure_int8_cost(bundle_dir: Path, ds: PreparedDataset, check: Int8Check, threads: int | None = None) -> B.Int8Cost:
    """The int8 user graph against fp32 on validation users, each scored as the service scores it
    (:class:`~training.r2end.bundle_scorer.BundleScorer`: the user graph, then the R2END+CF term or
    R2END-Hybrid's SASRec, then the item vectors) and evaluated by the one evaluator; logs the numbers,
    and a warning when int8 loses more than ``check.max_relative_loss`` of validation NDCG@10."""
    from training.evaluation.evaluator import evaluate
    from training.r2end.bundle_scorer import BundleScorer

    started = time.perf_counter()
    users = np.arange(ds.n_users)
    if ds.n_users > check.users:
        users = np.sort(np.random.default_rng(check.seed).choice(ds.n_users, check.users, replace=False))
    runs = {}
    for precision in ("fp32", "int8"):
        scorer = _KeepsText(BundleScorer(bundle_dir, int8=precision == "int8", threads=threads))
        result = evaluate(scorer, ds, "valid", users=users.tolist(), keep_per_user=False, keep_top10=True)
        runs[precision] = (result, np.concatenate(scorer.text))
    (fp32, text32), (int8, text8) = runs["fp32"], runs["int8"]
    ndcg32, ndcg8 = fp32.metrics["NDCG@10"], int8.metrics["NDCG@10"]
    overlap = [len(set(a) & set(b)) / max(len(a), len(b)) if a or b else 1.0 for a, b in zip(fp32.top10, int8.top10, strict=True)]
    cosine = (text32 * text8).sum(1) / np.maximum(np.linalg.norm(text32, axis=1) * np.linalg.norm(text8, axis=1), 1e-12)
    cost = B.Int8Cost(
        users=len(users),
        ndcg10_fp32=round(ndcg32, 6),
        ndcg10_int8=round(ndcg8, 6),
        relative_loss=round((ndcg32 - ndcg8) / ndcg32, 6) if ndcg32 > 0 else 0.0,
        top10_overlap=round(float(np.mean(overlap)), 6),
        text_cosine_min=round(float(cosine.min()), 6),
        text_cosine_mean=round(float(cosine.mean()), 6),
        max_relative_loss=check.max_relative_loss,
        seconds=round(time.perf_counter() - started, 1),
    )
    log.info("export: %s (%.1f s)", cost.describe(), cost.seconds)
    if cost.exceeds:
        log.warning(
            "export: the int8 user graph loses %.1f%% of validation NDCG@10 (more than Int8Check.max_relative_loss, %.1f%%): "
            "serve this bundle in fp32 (leave R2END_USE_INT8 unset); the service warns if it is started with int8",
            100 * cost.relative_loss,
            100 * check.max_relative_loss,
        )
    return cost


class _KeepsText:
    """A :class:`BundleScorer` that keeps the user graph's z_u it scored with (for the fp32/int8 cosine)."""

    def __init__(self, scorer: BundleScorer):
        self.scorer, self.name = scorer, scorer.name
        self.text: list[np.ndarray] = []

    def score(self, ds: PreparedDataset, users: Sequence[int], histories: Sequence[list[tuple[int, int]]]) -> np.ndarray:
        text = self.scorer.text_vectors(ds, histories)
        self.text.append(text)
        return self.scorer.scores(self.scorer.user_vectors(text, histories))


def measure_hybrid_parity(
    hybrid: HybridModel, ds: PreparedDataset, bundle_dir: Path, spec: B.HybridSpec, users: int = 32
) -> dict[str, float]:
    """Max |ONNX - PyTorch| of SASRec's h_u and of the whole hybrid user vector, over the first ``users``
    test histories (held-out items in them are left out of SASRec's input on both sides)."""
    import onnxruntime as ort

    from index.hybrid import history_weights, sasrec_input, user_vectors

    histories = [ds.example(u, "test")[0] for u in range(min(users, ds.n_users))]
    session = ort.InferenceSession(str(bundle_dir / B.SASREC_ONNX), providers=["CPUExecutionProvider"])
    onnx_hidden = session.run(
        None, {"history": sasrec_input([[r for r, _ in h] for h in histories], hybrid.trained, spec.max_len)}
    )[0]
    torch_hidden, torch_text = hybrid.users(ds, histories)
    cfg = hybrid.base.config
    onnx_text = OnnxTextEncoder(
        bundle_dir / B.USER_ONNX, bundle_dir / B.TOKENIZER, cfg.max_seq_length, threads=cfg.threads
    ).encode(hybrid.base.history_texts(ds, histories))
    weight = history_weights(histories, spec.weight, spec.length_edges, spec.length_weights)
    served = user_vectors(onnx_hidden, onnx_text, hybrid.cov_cf, hybrid.cov_text, weight, spec.bias)
    trained = user_vectors(torch_hidden, torch_text, hybrid.cov_cf, hybrid.cov_text, hybrid.weights(histories), hybrid.bias)
    return {
        "sasrec_max_abs_diff": float(np.abs(onnx_hidden - torch_hidden).max()),
        "hybrid_user_max_abs_diff": float(np.abs(served - trained).max()),
        "hybrid_users": len(histories),
    }
