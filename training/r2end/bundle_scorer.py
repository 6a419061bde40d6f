"""Evaluate an exported bundle exactly as it is served: tokenizer + ONNX Runtime + item vectors
(and, as the service: for R2END-Hybrid bundles, SASRec's graph with :class:`index.hybrid.HybridUsers`;
for R2END+CF bundles, the history tower with :class:`index.history_tower.HistoryTerm`)."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np

from index import bundle as B
from index.catalog import Catalog
from index.history_tower import HistoryTerm
from index.hybrid import HybridUsers
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
        self.hybrid = HybridUsers(directory, self.manifest, threads or 1) if self.manifest.hybrid is not None else None
        self.history = HistoryTerm(directory, self.manifest, threads or 1) if self.manifest.history_tower is not None else None
        self.batch_size = batch_size
        self.name = f"{self.manifest.variant}-onnx-{'int8' if int8 else 'fp32'}"

    def history_texts(self, ds: PreparedDataset, histories: Sequence[list[tuple[int, int]]]) -> list[str]:
        """H_u with the bundle's verbaliser (the one training used)."""
        return ds.history_texts(histories, self.manifest.verbaliser)

    def text_vectors(self, ds: PreparedDataset, histories: Sequence[list[tuple[int, int]]]) -> np.ndarray:
        """z_u: the user graph's output for the histories' texts, in batches of ``batch_size``."""
        texts = self.history_texts(ds, histories)
        return np.concatenate(
            [self.encoder.encode(texts[start : start + self.batch_size]) for start in range(0, len(texts), self.batch_size)]
        )

    def user_vectors(self, text: np.ndarray, histories: Sequence[list[tuple[int, int]]]) -> np.ndarray:
        """The served user vectors from z_u: unchanged for R2END, with the collaborative term for R2END+CF
        (the history tower), the hybrid user vector for R2END-Hybrid (SASRec over the histories' rows)."""
        rows = [[row for row, _ in history] for history in histories]
        if self.hybrid is not None:
            return self.hybrid.users(text, rows)
        if self.history is not None:
            return self.history.add(text, rows)
        return text

    def scores(self, users: np.ndarray) -> np.ndarray:
        """Inner product of user vectors with every item vector (the catalogue's order)."""
        return users @ self.item_vectors.T

    def score(self, ds: PreparedDataset, users: Sequence[int], histories: Sequence[list[tuple[int, int]]]) -> np.ndarray:
        """Inner product of the user vector with every item vector, in the dataset's item order: the cosine
        of z_u (from ONNX; R2END+CF: with its collaborative term), or for R2END-Hybrid bundles the hybrid
        user vector's (see :mod:`index.hybrid`)."""
        if self.catalog.ids != ds.catalog.ids:
            raise ValueError("bundle catalogue does not match the dataset's items (different dataset or split?)")
        return self.scores(self.user_vectors(self.text_vectors(ds, histories), histories))
