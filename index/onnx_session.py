"""The one way a bundle's ONNX graphs are opened for CPU inference (no torch): the user and item encoders,
R2END+CF's sequence tower and R2END-Hybrid's SASRec graph get the same session options, and an unreadable
graph is a :class:`~index.bundle.BundleError` naming its file. ``onnxruntime`` is imported lazily so that
``index`` itself stays light."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

from index.bundle import BundleError

if TYPE_CHECKING:
    import onnxruntime as ort


def cpu_session(path: Path, threads: int) -> ort.InferenceSession:
    """A CPU session of the graph at ``path`` with ``threads`` intra-op threads (one inter-op thread, sequential
    execution, every graph optimisation); callers run several sessions side by side rather than one wide one."""
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    options.inter_op_num_threads = 1
    options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    try:
        return ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
    except Exception as exc:  # onnxruntime raises its own types for unreadable files
        raise BundleError(f"{path}: cannot be loaded ({type(exc).__name__}: {str(exc)[:300]})") from exc
