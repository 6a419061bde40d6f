"""R2END-Hybrid's vectors, shared by training (``training/r2end/hybrid.py``) and the service.

SASRec-CE's scores and the text path's, each standardised per user, summed in one inner product:

    user      [ h_u ; w * sd(h_u) / sd(z_u) * z_u ; b * sd(h_u) ]
    warm item [ E_i ; z_i ; 0 ]
    new item  [ A z_i + a ; c * z_i ; 1 ]

(``w`` is one weight, or, with a history-length gate, the weight of the user's history-length bucket:
:func:`history_weights`) with ``sd(h) = sqrt(h' C_E h)`` and ``sd(z) = sqrt(z' C_Z z)`` (the spread of a user's scores over
the trained items; training's module docstring derives it). The inner product is therefore not a
cosine: it is the user's SASRec score spread times the standardised sum (a per-user scale changes
no ranking). The algebra is pure numpy, so training scores with exactly what the service serves;
:class:`HybridUsers` runs a bundle's SASRec graph (ONNX Runtime, no torch) for the service and
for offline evaluation of bundles.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from index import bundle as B
from index.onnx_session import cpu_session

log = logging.getLogger(__name__)


def apply_map(mapping: np.ndarray, text: np.ndarray) -> np.ndarray:
    """Predicted SASRec embeddings of items from their text vectors (``mapping``: ``(D + 1, H)``, last row = a)."""
    return text @ mapping[:-1] + mapping[-1]


def item_vectors(
    sasrec_items: np.ndarray, text_items: np.ndarray, new: np.ndarray, mapping: np.ndarray, text_scale: float = 1.0
) -> np.ndarray:
    """``[E_i ; z_i ; 0]`` for warm rows, ``[A z_i + a ; c z_i ; 1]`` for ``new`` rows (their E rows are never read;
    ``c`` = ``text_scale``, how much more a new item's text counts)."""
    cf = np.where(new[:, None], apply_map(mapping, text_items), sasrec_items)
    text = np.where(new[:, None], text_scale * text_items, text_items)
    return np.hstack([cf, text, new[:, None].astype(np.float32)]).astype(np.float32)


def history_weights(
    histories: Sequence[Sequence[object]], weight: float, edges: Sequence[float] = (), bucket_weights: Sequence[float] = ()
) -> float | np.ndarray:
    """The text weight w per user: ``weight`` for everyone, or, with a history-length gate (``edges`` non-empty),
    ``bucket_weights[i]`` for a history of n rows with ``edges[i-1] < n <= edges[i]`` (first bucket: n <= edges[0],
    last: n > edges[-1]). n counts the history's catalogue rows (each item once), as training and the service see them.
    """
    if not edges:
        return weight
    lengths = np.array([len(history) for history in histories])
    return np.asarray(bucket_weights, dtype=np.float64)[np.digitize(lengths, np.asarray(edges, dtype=np.float64), right=True)]


def user_vectors(
    hidden: np.ndarray,
    text: np.ndarray,
    cov_cf: np.ndarray,
    cov_text: np.ndarray,
    weight: float | np.ndarray,
    bias: float | np.ndarray,
) -> np.ndarray:
    """``[h ; w sd(h)/sd(z) z ; b sd(h)]`` per user (see the module docstring); ``weight`` and ``bias``: one for all,
    or one per user (``weight`` from :func:`history_weights`)."""
    sd_cf = np.sqrt(np.maximum(np.einsum("ij,jk,ik->i", hidden, cov_cf, hidden), 1e-12))
    sd_text = np.sqrt(np.maximum(np.einsum("ij,jk,ik->i", text, cov_text, text), 1e-12))
    return np.hstack([hidden, (weight * sd_cf / sd_text)[:, None] * text, (bias * sd_cf)[:, None]]).astype(np.float32)


def sasrec_positions(rows: Sequence[int], trained: np.ndarray, max_len: int) -> list[int]:
    """Positions (in ``rows``, oldest first) SASRec reads: the last ``max_len`` of the trained rows.

    Rows it never learned (held out of training, or beyond the bundle's catalogue: added live) are
    left out of its input, as in training (``HybridModel.hidden``).
    """
    known = len(trained)
    return [p for p, row in enumerate(rows) if 0 <= row < known and trained[row]][-max_len:] if max_len > 0 else []


def sasrec_input(histories: Sequence[Sequence[int]], trained: np.ndarray, max_len: int) -> np.ndarray:
    """``(B, max_len)`` int64: the read rows + 1, left-padded with 0 to the full length (positions
    count from the left edge, as in training, so the length is always ``max_len``)."""
    batch = np.zeros((len(histories), max_len), dtype=np.int64)
    for i, rows in enumerate(histories):
        read = [rows[p] for p in sasrec_positions(rows, trained, max_len)]
        if read:
            batch[i, max_len - len(read) :] = np.asarray(read, dtype=np.int64) + 1
    return batch


class HybridUsers:
    """A hybrid bundle's user side without torch: SASRec's ONNX graph and the arrays of the inner product."""

    def __init__(self, directory: Path, manifest: B.Manifest, threads: int = 1):
        spec = manifest.hybrid
        if spec is None:
            raise B.BundleError(f"{Path(directory) / B.MANIFEST}: not an R2END-Hybrid bundle (no hybrid section)")
        self.spec = spec
        self.arrays = B.load_hybrid_arrays(directory, manifest)
        path = Path(directory) / spec.sasrec_file
        self.session = cpu_session(path, threads)
        inputs, outputs = self.session.get_inputs(), self.session.get_outputs()
        width, dim = inputs[0].shape[-1], outputs[0].shape[-1]
        if (
            len(inputs) != 1
            or (isinstance(width, int) and width != spec.max_len)
            or (isinstance(dim, int) and dim != spec.sasrec_dim)
        ):
            raise B.BundleError(
                f"{path}: inputs {[i.shape for i in inputs]} -> {outputs[0].shape}, manifest says (batch, {spec.max_len}) -> "
                f"(batch, {spec.sasrec_dim})"
            )
        self.sasrec_items = np.array(np.load(Path(directory) / B.ITEM_VECTORS, mmap_mode="r")[:, : spec.sasrec_dim])
        """E_i of the bundle's rows (read for trained rows only): an item replaced through PUT /items keeps its row, so its SASRec row."""

    @property
    def trained(self) -> np.ndarray:
        return self.arrays.trained

    def positions(self, rows: Sequence[int]) -> list[int]:
        """Which of a history's rows SASRec reads (see :func:`sasrec_positions`)."""
        return sasrec_positions(rows, self.arrays.trained, self.spec.max_len)

    def hidden(self, histories: Sequence[Sequence[int]]) -> np.ndarray:
        """h_u per history of catalogue rows (oldest first): one ONNX run for the batch."""
        batch = sasrec_input(histories, self.arrays.trained, self.spec.max_len)
        return self.session.run(None, {self.session.get_inputs()[0].name: batch})[0]

    def users(
        self, text: np.ndarray, histories: Sequence[Sequence[int]], biases: Sequence[float | None] | None = None
    ) -> np.ndarray:
        """Hybrid user vectors from the text path's z_u (the user graph's output) and the histories' rows.

        ``biases``: per user, a new-item bias b that replaces the bundle's (None: the bundle's). b is only the
        user vector's last coordinate, the one new items' flag meets, so it moves new items and nothing else.
        """
        a = self.arrays
        bias: float | np.ndarray = self.spec.bias
        if biases is not None:
            bias = np.array([self.spec.bias if b is None else b for b in biases], dtype=np.float64)
        weight = history_weights(histories, self.spec.weight, self.spec.length_edges, self.spec.length_weights)
        return user_vectors(self.hidden(histories), text, a.cov_cf, a.cov_text, weight, bias)

    def items(self, text: np.ndarray, rows: Sequence[int | None]) -> np.ndarray:
        """Hybrid item vectors from text vectors z_i: the warm form for rows SASRec learned, else the new-item form."""
        trained = self.arrays.trained
        known = np.array(
            [-1 if row is None or not (0 <= row < len(trained) and trained[row]) else row for row in rows], dtype=np.int64
        )
        new = known < 0
        sasrec = np.zeros((len(rows), self.spec.sasrec_dim), dtype=np.float32)
        sasrec[~new] = self.sasrec_items[known[~new]]
        return item_vectors(sasrec, text.astype(np.float32), new, self.arrays.mapping, self.spec.text_scale)
