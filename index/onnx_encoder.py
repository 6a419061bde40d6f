"""Text -> vector with a bundle's tokenizer and ONNX graph (no torch): shared by the service and
by offline checks of exported bundles. ``onnxruntime`` and ``tokenizers`` are imported lazily
so that ``index`` itself stays light."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np


class OnnxTextEncoder:
    """Tokenise (truncate to ``max_length``, pad to the longest in the batch) and run one ONNX session."""

    def __init__(self, onnx_path: Path, tokenizer_path: Path, max_length: int = 256, threads: int | None = None):
        import onnxruntime as ort
        from tokenizers import Tokenizer

        self.tokenizer = Tokenizer.from_file(str(tokenizer_path))
        self.tokenizer.enable_truncation(max_length=max_length)
        self.tokenizer.no_padding()
        self.max_length = max_length
        options = ort.SessionOptions()
        threads = threads or max(1, os.cpu_count() or 1)
        options.intra_op_num_threads = threads
        options.inter_op_num_threads = 1
        options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        self.session = ort.InferenceSession(str(onnx_path), options, providers=["CPUExecutionProvider"])
        self.output_dim = int(self.session.get_outputs()[0].shape[-1])

    def tokenize(self, texts: list[str]) -> tuple[np.ndarray, np.ndarray]:
        """``(input_ids, attention_mask)`` int64 arrays padded to the longest text."""
        encodings = self.tokenizer.encode_batch(texts)
        width = max(len(e.ids) for e in encodings)
        ids = np.zeros((len(texts), width), dtype=np.int64)
        mask = np.zeros((len(texts), width), dtype=np.int64)
        for row, encoding in enumerate(encodings):
            ids[row, : len(encoding.ids)] = encoding.ids
            mask[row, : len(encoding.ids)] = 1
        return ids, mask

    def run(self, ids: np.ndarray, mask: np.ndarray) -> np.ndarray:
        """The graph's output for already tokenised input."""
        return self.session.run(None, {"input_ids": ids, "attention_mask": mask})[0]

    def encode(self, texts: list[str]) -> np.ndarray:
        """Vectors for ``texts`` (one ONNX run)."""
        if not texts:
            return np.zeros((0, self.output_dim), dtype=np.float32)
        return self.run(*self.tokenize(texts))
