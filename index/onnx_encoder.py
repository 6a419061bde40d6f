"""Text -> vector with a bundle's tokenizer and ONNX graph (no torch): shared by the service and
by offline checks of exported bundles. ``onnxruntime`` and ``tokenizers`` are imported lazily
so that ``index`` itself stays light.

Tokenising and running are separate steps (:class:`TextEncoder`) so that a caller can group
token sequences of similar length before running them; :func:`pad` is the one padding rule.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path
from typing import Protocol

import numpy as np

from index.onnx_session import cpu_session


class TextEncoder(Protocol):
    """What a batcher needs from an encoder: unpadded token ids, then vectors for a group of them."""

    def tokenize(self, texts: Sequence[str]) -> list[list[int]]:
        """Token ids per text (truncated to the model's length), not padded."""
        ...

    def run(self, token_ids: Sequence[Sequence[int]], alone: bool = False) -> np.ndarray:
        """One vector per token sequence (one model run for all of them); ``alone``: no other run is
        in flight, so this one may use every core."""
        ...


def pad(token_ids: Sequence[Sequence[int]]) -> tuple[np.ndarray, np.ndarray]:
    """``(input_ids, attention_mask)`` int64, right-padded with 0 to the longest sequence (the mask hides the padding)."""
    width = max(1, max((len(ids) for ids in token_ids), default=0))
    ids = np.zeros((len(token_ids), width), dtype=np.int64)
    mask = np.zeros((len(token_ids), width), dtype=np.int64)
    for row, seq in enumerate(token_ids):
        ids[row, : len(seq)] = seq
        mask[row, : len(seq)] = 1
    return ids, mask


class OnnxTextEncoder:
    """A bundle's tokenizer (truncating to ``max_length``) and its ONNX graph; a :class:`TextEncoder`.

    ``threads`` is the intra-op thread count of a run. Several runs may be in flight at once
    (ONNX Runtime sessions are thread-safe), and on a few cores two one-thread runs of small
    batches beat one two-thread run (docs/BENCHMARKS.md). ``alone_threads``, when it differs,
    adds a second session of the same graph for runs that have the machine to themselves, so
    that a lone request still gets every core.
    """

    def __init__(
        self,
        onnx_path: Path,
        tokenizer_path: Path,
        max_length: int = 256,
        threads: int | None = None,
        alone_threads: int | None = None,
    ):
        from tokenizers import Tokenizer

        self.tokenizer = Tokenizer.from_file(str(tokenizer_path))
        self.tokenizer.enable_truncation(max_length=max_length)
        self.tokenizer.no_padding()
        self.max_length = max_length
        threads = threads or max(1, os.cpu_count() or 1)
        self.session = cpu_session(onnx_path, threads)
        self.alone_session = cpu_session(onnx_path, alone_threads) if alone_threads and alone_threads != threads else self.session
        self.output_dim = int(self.session.get_outputs()[0].shape[-1])

    def tokenize(self, texts: Sequence[str]) -> list[list[int]]:
        """Token ids per text, truncated to ``max_length``, not padded."""
        return [encoding.ids for encoding in self.tokenizer.encode_batch(list(texts))]

    def run(self, token_ids: Sequence[Sequence[int]], alone: bool = False) -> np.ndarray:
        """The graph's output for already tokenised input, padded with :func:`pad` (one ONNX run)."""
        return self.run_padded(*pad(token_ids), alone=alone)

    def run_padded(self, ids: np.ndarray, mask: np.ndarray, alone: bool = False) -> np.ndarray:
        """``session.run`` alone, on arrays :func:`pad` made (benchmarks time just this)."""
        session = self.alone_session if alone else self.session
        return session.run(None, {"input_ids": ids, "attention_mask": mask})[0]

    def encode(self, texts: Sequence[str]) -> np.ndarray:
        """Vectors for ``texts`` (one ONNX run)."""
        if not texts:
            return np.zeros((0, self.output_dim), dtype=np.float32)
        return self.run(self.tokenize(texts))
