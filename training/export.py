"""Export a trained R2END model and write the model bundle.

The ONNX graphs themselves (one per side, fused where ONNX Runtime can fuse them, the CF
tower, int8) are made by :mod:`training.onnx_graphs`. Parity with PyTorch is measured on
real texts at export time and stored in the manifest, with how each graph was made.
"""

from __future__ import annotations

import logging
import shutil
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
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
    from training.r2end.hybrid import HybridModel

log = logging.getLogger(__name__)


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
) -> B.Manifest:
    """Write a complete, checksummed bundle to ``out_dir`` (atomically replaced) and return its manifest.

    ``fuse``: write the text graphs with ONNX Runtime's transformer fusions where they match the
    plain graphs (see :mod:`training.onnx_graphs`); the manifest records what each graph is.

    ``history_table`` (R2END+CF history tower) adds per-item history embeddings that the
    service averages over a request's last ``history_items`` known items and adds to z_u.

    ``hybrid`` (R2END-Hybrid, whose text path is ``model``): the index holds its vectors, and
    SASRec's graph and the arrays of the inner product join the bundle (:mod:`index.hybrid`).
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
            bias=hybrid.bias,
            text_scale=hybrid.text_scale,
        )
        parity.update(measure_hybrid_parity(hybrid, ds, tmp, hybrid_spec))
    log.info("export: ONNX vs PyTorch %s", parity)
    cfg = model.config
    fingerprint = f"{ds.name}-{cfg.variant}-{cfg.fingerprint()}-{time.strftime('%Y%m%dT%H%M%SZ', time.gmtime())}"
    manifest = B.write_manifest(
        tmp,
        {
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
        },
    )
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


def measure_hybrid_parity(
    hybrid: HybridModel, ds: PreparedDataset, bundle_dir: Path, spec: B.HybridSpec, users: int = 32
) -> dict[str, float]:
    """Max |ONNX - PyTorch| of SASRec's h_u and of the whole hybrid user vector, over the first ``users``
    test histories (held-out items in them are left out of SASRec's input on both sides)."""
    import onnxruntime as ort

    from index.hybrid import sasrec_input, user_vectors

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
    served = user_vectors(onnx_hidden, onnx_text, hybrid.cov_cf, hybrid.cov_text, spec.weight, spec.bias)
    trained = user_vectors(torch_hidden, torch_text, hybrid.cov_cf, hybrid.cov_text, hybrid.weight, hybrid.bias)
    return {
        "sasrec_max_abs_diff": float(np.abs(onnx_hidden - torch_hidden).max()),
        "hybrid_user_max_abs_diff": float(np.abs(served - trained).max()),
        "hybrid_users": len(histories),
    }
