"""Evaluate an exported bundle exactly as it is served: tokenizer + ONNX Runtime + item vectors."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np

from index import bundle as B
from index.catalog import Catalog
from index.onnx_encoder import OnnxTextEncoder
from training.data.preprocess import PreparedDataset


class BundleScorer:
    """Scores histories with a bundle's user ONNX graph (fp32 or int8) and its item vectors."""

    def __init__(self, directory: Path, int8: bool = False, threads: int | None = None, batch_size: int = 32):
        self.manifest = B.load_manifest(directory)
        self.catalog = Catalog.load_jsonl(directory / B.CATALOG)
        graph = B.USER_ONNX_INT8 if int8 else B.USER_ONNX
        self.encoder = OnnxTextEncoder(directory / graph, directory / B.TOKENIZER, self.manifest.max_seq_length, threads)
        self.item_vectors = np.load(directory / B.ITEM_VECTORS)
        self.batch_size = batch_size
        self.name = f"{self.manifest.variant}-onnx-{'int8' if int8 else 'fp32'}"

    def history_texts(self, ds: PreparedDataset, histories: Sequence[list[tuple[int, int]]]) -> list[str]:
        """H_u with the bundle's verbaliser (the one training used)."""
        return ds.history_texts(histories, self.manifest.verbaliser)

    def score(self, ds: PreparedDataset, users: Sequence[int], histories: Sequence[list[tuple[int, int]]]) -> np.ndarray:
        """Cosine of z_u (from ONNX) with every item vector, in the dataset's item order."""
        if self.catalog.ids != ds.catalog.ids:
            raise ValueError("bundle catalogue does not match the dataset's items (different dataset or split?)")
        texts = self.history_texts(ds, histories)
        vectors = np.concatenate(
            [self.encoder.encode(texts[i : i + self.batch_size]) for i in range(0, len(texts), self.batch_size)]
        )
        return vectors @ self.item_vectors.T
