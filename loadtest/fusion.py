"""How many transformer operators ONNX Runtime's offline optimizer fuses in an ONNX graph (a measurement).

Why: ONNX Runtime's fast CPU kernels for BERT-like encoders (``Attention``,
``SkipLayerNormalization``, ``BiasGelu``, ...) only run if the graph's subgraphs match the
patterns of ``onnxruntime.transformers.optimizer``. A graph that fuses nothing runs every
MatMul, Softmax and LayerNorm as separate nodes. This counts what the optimizer's Python
fusions (``opt_level=0``: no ORT graph passes first) find, and the node count before and
after; nothing is written back.
"""

from __future__ import annotations

import contextlib
import io
import logging
import warnings
from dataclasses import dataclass
from pathlib import Path

log = logging.getLogger(__name__)

# the fusions that matter most for a BERT-like encoder on CPU, in the order they are listed
KEY_OPS = (
    "Attention",
    "MultiHeadAttention",
    "SkipLayerNormalization",
    "EmbedLayerNormalization",
    "LayerNormalization",
    "BiasGelu",
    "FastGelu",
    "Gelu",
)


@dataclass(frozen=True)
class FusionReport:
    """Nodes of each fused-operator type after the optimizer ran (``LayerNormalization`` also counts ones the
    export already wrote as such) and the graph's node count before/after."""

    path: Path
    fused: dict[str, int]
    nodes_before: int
    nodes_after: int

    @property
    def total_fused(self) -> int:
        return sum(self.fused.values())

    def summary(self) -> str:
        """``Attention 6, SkipLayerNormalization 12, ...`` (non-zero counts), or ``nothing fused``."""
        parts = [f"{op} {n}" for op, n in self.fused.items() if n]
        return ", ".join(parts) if parts else "nothing fused"


def fusion_report(onnx_path: Path, num_heads: int = 0, hidden_size: int = 0) -> FusionReport:
    """Run the BERT fusions of ``onnxruntime.transformers.optimizer`` on ``onnx_path`` in memory and count.

    ``num_heads`` / ``hidden_size`` 0: the optimizer detects them from the graph.
    """
    import onnx
    from onnxruntime.transformers.optimizer import optimize_model

    model = onnx.load(str(onnx_path))
    before = len(model.graph.node)
    # the optimizer logs every pattern it tries (under top-level logger names such as "fusion_gelu") and warns
    # about shape inference: not for the user's terminal
    logging.disable(logging.WARNING)
    try:
        with warnings.catch_warnings(), contextlib.redirect_stdout(io.StringIO()):
            warnings.simplefilter("ignore")
            optimized = optimize_model(model, model_type="bert", num_heads=num_heads, hidden_size=hidden_size, opt_level=0)
            stats = optimized.get_fused_operator_statistics()
    finally:
        logging.disable(logging.NOTSET)
    fused = {op: int(stats.get(op, 0)) for op in KEY_OPS}
    fused.update({op: int(n) for op, n in stats.items() if op not in fused and n})
    report = FusionReport(Path(onnx_path), fused, before, len(optimized.model.graph.node))
    log.info("%s: %s (%d -> %d nodes)", onnx_path, report.summary(), before, report.nodes_after)
    return report


def markdown(reports: list[tuple[str, FusionReport]]) -> str:
    """A table: one row per (label, report), a column per key fused op."""
    header = "| graph | nodes | nodes after fusion | " + " | ".join(KEY_OPS) + " |"
    lines = [header, "|---|---:|---:|" + "---:|" * len(KEY_OPS)]
    for label, r in reports:
        lines.append(
            f"| {label} | {r.nodes_before} | {r.nodes_after} | " + " | ".join(str(r.fused.get(op, 0)) for op in KEY_OPS) + " |"
        )
    return "\n".join(lines)
