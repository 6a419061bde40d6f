"""The model bundle: one directory with everything the service needs, and its validation.

Layout::

    manifest.json          schema version, variant, encoder, dims, dataset, split hash,
                           git commit, the verbaliser (history -> text), metrics, config,
                           sha256 of every other file
    catalog.jsonl          item metadata in row order (row i = item_vectors[i])
    item_vectors.npy       projected, L2-normalised item vectors z_i (float32)
    item_index.faiss       FAISS index over item_vectors (ids = rows)
    user_encoder.onnx      tokens -> z_u (student encoder + pooling + projection + L2 norm)
    user_encoder.int8.onnx the same, dynamically quantised to int8 (optional; what it costs: metrics.int8, :class:`Int8Cost`)
    item_encoder.onnx      tokens -> z_i (frozen encoder + pooling + projection + L2 norm)
    tokenizer.json         the encoders' tokenizer (Hugging Face ``tokenizers`` format)

An R2END-Hybrid bundle (manifest section ``hybrid``, see :mod:`index.hybrid`) adds::

    sasrec.onnx            SASRec's last hidden state h_u from left-padded item rows + 1 (0 = padding)
    hybrid_arrays.npz      C_E, C_Z, the text -> SASRec ridge map and the trained-item mask

and its item vectors/index hold the hybrid vectors ``[E_i ; z_i ; 0]`` / ``[A z_i + a ; z_i ; 1]``
(dim ``sasrec_dim + output_dim + 1``) while the text graphs still output ``output_dim``.
:func:`load_manifest` refuses a bundle whose schema version, checksums or dims don't
match, with a message naming the file and the mismatch.
"""

from __future__ import annotations

import hashlib
import json
import logging
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import numpy as np
from pydantic import BaseModel, Field, ValidationError, model_validator

from index.verbalize import Verbaliser

log = logging.getLogger(__name__)

SCHEMA_VERSION = 2
"""The newest manifest format this code reads and writes. 1: the original format; 2: adds the hybrid's
history-length gate (``hybrid.length_edges``/``length_weights``). A bundle is written at the lowest
version that holds it (:attr:`Manifest.minimum_schema_version`), so a gate-free bundle stays readable by
older r2end, while an older r2end refuses a gated bundle instead of serving it with one weight. Gated bundles
written as version 1 (before version 2 existed) are read with their gate and a warning (:func:`understated_version`)."""
MANIFEST = "manifest.json"
CATALOG = "catalog.jsonl"
ITEM_VECTORS = "item_vectors.npy"
ITEM_INDEX = "item_index.faiss"
USER_ONNX = "user_encoder.onnx"
USER_ONNX_INT8 = "user_encoder.int8.onnx"
ITEM_ONNX = "item_encoder.onnx"
TOKENIZER = "tokenizer.json"
HISTORY_EMBEDDINGS = "history_item_embeddings.npy"
HISTORY_ONNX = "history_encoder.onnx"
SASREC_ONNX = "sasrec.onnx"
HYBRID_ARRAYS = "hybrid_arrays.npz"
REQUIRED_FILES = (CATALOG, ITEM_VECTORS, ITEM_INDEX, USER_ONNX, ITEM_ONNX, TOKENIZER)


class BundleError(ValueError):
    """A bundle that must not be served; the message says which file and why."""


class HistoryTower(BaseModel):
    """R2END+CF's user-side collaborative term, added to the ONNX text vector before normalising.

    ``mean``: the mean of ``file`` rows (a .npy table) over the last ``max_items`` history items.
    ``sequence``: ``file`` is an ONNX graph from left-padded item rows + 1 (0 = padding) of the
    last ``max_items`` items to the term; items beyond the trained catalogue are left out.
    """

    kind: Literal["mean", "sequence"] = "mean"
    file: str = HISTORY_EMBEDDINGS
    max_items: int = 50
    trained_items: int | None = None


class HybridSpec(BaseModel):
    """R2END-Hybrid (:mod:`index.hybrid`): SASRec's user state and the text path in one inner product.

    Users are ``[h_u ; weight * sd(h_u)/sd(z_u) * z_u ; bias * sd(h_u)]`` where h_u is the
    ``sasrec_file`` graph's output over the last ``max_len`` *trained* history rows; the spreads
    and the new-item map come from ``arrays_file`` (:class:`HybridArrays`).
    """

    sasrec_file: str = SASREC_ONNX
    arrays_file: str = HYBRID_ARRAYS
    max_len: int = Field(gt=0, description="SASRec's input length: the last max_len trained history rows, left-padded")
    sasrec_dim: int = Field(gt=0, description="H, SASRec's hidden size")
    weight: float = Field(description="w, the text path's weight in SASRec score-spread units")
    length_edges: list[float] = Field(
        default_factory=list,
        description="history-length gate: bucket edges in history rows, ascending (empty: every user gets weight)",
    )
    length_weights: list[float] = Field(
        default_factory=list, description="history-length gate: w per bucket, len(length_edges) + 1 values replacing weight"
    )
    bias: float = Field(description="b, new items' offset in units of the user's SASRec score spread")
    text_scale: float = Field(
        1.0, gt=0, description="c, the weight of a new item's text vector (new items are [A z + a ; c z ; 1])"
    )

    @model_validator(mode="after")
    def _gate_is_consistent(self) -> HybridSpec:
        if len(self.length_weights) != (len(self.length_edges) + 1 if self.length_edges else 0):
            raise ValueError(
                f"length_weights has {len(self.length_weights)} values for {len(self.length_edges)} length_edges; "
                "a gate needs one more weight than edges, no gate needs neither"
            )
        if any(b <= a for a, b in zip(self.length_edges, self.length_edges[1:], strict=False)):
            raise ValueError(f"length_edges must ascend strictly, got {self.length_edges}")
        if not all(math.isfinite(x) for x in [*self.length_edges, *self.length_weights]):
            raise ValueError("length_edges and length_weights must be finite")
        return self


@dataclass(frozen=True)
class HybridArrays:
    """``hybrid_arrays.npz``: what the hybrid vectors are built from besides the two graphs."""

    cov_cf: np.ndarray
    """C_E (H, H): covariance of the trained items' SASRec embeddings."""
    cov_text: np.ndarray
    """C_Z (D, D): covariance of the trained items' text vectors."""
    mapping: np.ndarray
    """(D + 1, H): the ridge map ``[z, 1] -> E`` that gives new items a SASRec embedding."""
    trained: np.ndarray
    """(n_items,) bool: rows SASRec learned; the others (held out) are new items and not in its input."""

    def save(self, path: Path) -> None:
        np.savez(path, cov_cf=self.cov_cf, cov_text=self.cov_text, mapping=self.mapping, trained=self.trained)

    @classmethod
    def load(cls, path: Path, spec: HybridSpec, n_items: int, text_dim: int) -> HybridArrays:
        """Read and check the arrays against the manifest's dims; :class:`BundleError` names the file."""
        h, d = spec.sasrec_dim, text_dim
        expected = {
            "cov_cf": ((h, h), "f"),
            "cov_text": ((d, d), "f"),
            "mapping": ((d + 1, h), "f"),
            "trained": ((n_items,), "b"),
        }
        try:
            with np.load(path, allow_pickle=False) as data:
                arrays = {name: data[name] for name in expected if name in data.files}
        except (OSError, ValueError) as exc:
            raise BundleError(f"{path}: unreadable ({exc})") from exc
        for name, (shape, kind) in expected.items():
            if name not in arrays:
                raise BundleError(f"{path}: no array {name!r}")
            if arrays[name].shape != shape or arrays[name].dtype.kind != kind:
                raise BundleError(f"{path}: {name} is {arrays[name].dtype} {arrays[name].shape}, expected {shape} ({kind})")
            if kind == "f" and not np.isfinite(arrays[name]).all():
                raise BundleError(f"{path}: {name} holds non-finite values")
        return cls(**{name: a.astype(np.float32) if a.dtype.kind == "f" else a for name, a in arrays.items()})


class Int8Cost(BaseModel):
    """``metrics["int8"]``: what serving the int8 user graph costs against fp32, measured at export.

    The same validation users are scored twice as the service scores them (the bundle's user graph in
    each precision, then its R2END+CF term or R2END-Hybrid's SASRec, then its item vectors) by the one
    evaluator (seen items masked). ``relative_loss`` is the share of validation NDCG@10 that int8 loses
    (negative: it gained); above ``max_relative_loss``, the threshold export was given, serve fp32.
    """

    stage: str = "valid"
    users: int = Field(ge=1, description="validation users scored (all of them, or a seeded sample)")
    ndcg10_fp32: float = Field(description="validation NDCG@10 with the fp32 user graph")
    ndcg10_int8: float = Field(description="validation NDCG@10 with the int8 user graph")
    relative_loss: float = Field(description="(fp32 - int8) / fp32 of validation NDCG@10; 0 when fp32 is 0")
    top10_overlap: float = Field(ge=0, le=1, description="mean |top-10 fp32 ∩ top-10 int8| / 10 per user")
    text_cosine_min: float = Field(description="min cosine of the user graph's z_u, int8 against fp32")
    text_cosine_mean: float
    max_relative_loss: float = Field(ge=0, description="the threshold of relative_loss export warned above")
    seconds: float = Field(0.0, description="time the measurement took at export")

    @property
    def exceeds(self) -> bool:
        """Whether int8 loses more validation NDCG@10 than the threshold allows."""
        return self.relative_loss > self.max_relative_loss

    def describe(self) -> str:
        """One line with the numbers, for logs."""
        return (
            f"int8 vs fp32 user graph on {self.users} {self.stage} users: NDCG@10 {self.ndcg10_fp32:.4f} -> "
            f"{self.ndcg10_int8:.4f} ({-100 * self.relative_loss:+.1f}%), top-10 overlap {self.top10_overlap:.3f}, "
            f"z_u cosine min {self.text_cosine_min:.4f} (mean {self.text_cosine_mean:.4f})"
        )


class Manifest(BaseModel):
    """``manifest.json``: what the bundle is and how it was made."""

    schema_version: int
    bundle_version: str = Field(description="unique id of this bundle (dataset, variant, time, content hash)")
    variant: str = Field(description="which model: r2end (the paper), r2end-cf, an ablation, ...")
    encoder: str
    embedding_dim: int
    output_dim: int = Field(description="dim of the user/item text graphs' output (and of the index, unless hybrid)")
    max_seq_length: int
    tokenizer: str = TOKENIZER
    index_kind: str = "flat"
    dataset: str
    split_hash: str
    git_commit: str
    created: str
    n_items: int
    verbaliser: Verbaliser = Field(description="the training config's verbaliser: every reader builds H_u with it")
    metrics: dict[str, Any] = {}
    config: dict[str, Any] = {}
    history_tower: HistoryTower | None = None
    hybrid: HybridSpec | None = None
    files: dict[str, str] = Field(description="sha256 of every file except the manifest")

    @property
    def minimum_schema_version(self) -> int:
        """The oldest format that holds everything this bundle uses (see :data:`SCHEMA_VERSION`)."""
        return 2 if self.hybrid is not None and self.hybrid.length_edges else 1

    @property
    def normalised_items(self) -> bool:
        """Whether the index's item vectors are unit vectors (scores = cosines); R2END-Hybrid's are not."""
        return self.hybrid is None

    @property
    def int8_cost(self) -> Int8Cost | None:
        """``metrics["int8"]`` (:class:`Int8Cost`), or None for a bundle exported without it; raises
        pydantic's ValidationError if it is malformed."""
        raw = self.metrics.get("int8")
        return None if raw is None else Int8Cost.model_validate(raw)

    @property
    def index_dim(self) -> int:
        """Dim of the item vectors and the FAISS index: the text dim, plus SASRec's and a flag for hybrids."""
        return self.output_dim if self.hybrid is None else self.hybrid.sasrec_dim + self.output_dim + 1


def understated_version(manifest: Manifest) -> str | None:
    """Why ``manifest`` claims an older format than its content needs, or None.

    Only gated bundles written before version 2 existed do: this code serves them with their gate, but
    an older r2end would serve them with one weight, so the reader is told how to mark them."""
    if manifest.schema_version >= manifest.minimum_schema_version:
        return None
    return (
        f"schema_version {manifest.schema_version} but it has a history-length gate (version "
        f"{manifest.minimum_schema_version}): served here with its gate, but an older r2end would serve it with one "
        f"weight; export it again, or set schema_version to {manifest.minimum_schema_version} in the manifest"
    )


def sha256_file(path: Path) -> str:
    """Hex sha256 of a file, streamed."""
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for chunk in iter(lambda: handle.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def write_manifest(directory: Path, fields: dict[str, Any]) -> Manifest:
    """Checksum every file in ``directory`` and write ``manifest.json`` last."""
    files = {p.name: sha256_file(p) for p in sorted(directory.iterdir()) if p.is_file() and p.name != MANIFEST}
    manifest = Manifest(schema_version=SCHEMA_VERSION, files=files, **fields)
    manifest = manifest.model_copy(update={"schema_version": manifest.minimum_schema_version})
    (directory / MANIFEST).write_text(manifest.model_dump_json(indent=2) + "\n")
    return manifest


def load_manifest(directory: Path, verify_checksums: bool = True) -> Manifest:
    """Read and validate a bundle's manifest and files; raise :class:`BundleError` if unusable."""
    directory = Path(directory)
    path = directory / MANIFEST
    if not path.is_file():
        raise BundleError(f"{path}: missing (is {directory} a model bundle?)")
    try:
        raw = json.loads(path.read_text())
    except json.JSONDecodeError as exc:
        raise BundleError(f"{path}: not valid JSON ({exc})") from exc
    version = raw.get("schema_version") if isinstance(raw, dict) else None
    if not isinstance(version, int) or isinstance(version, bool) or not 1 <= version <= SCHEMA_VERSION:
        raise BundleError(f"{path}: schema_version {version!r}, this code reads versions 1 to {SCHEMA_VERSION}")
    try:
        manifest = Manifest.model_validate(raw)
    except ValidationError as exc:
        raise BundleError(f"{path}: invalid manifest: {exc.errors()[0]['loc']} {exc.errors()[0]['msg']}") from exc
    if note := understated_version(manifest):
        log.warning("%s: %s", path, note)
    for name in REQUIRED_FILES:
        if name not in manifest.files:
            raise BundleError(f"{path}: no checksum for required file {name}")
    for name, expected in manifest.files.items():
        file_path = directory / name
        if not file_path.is_file():
            raise BundleError(f"{file_path}: listed in the manifest but missing")
        if verify_checksums and sha256_file(file_path) != expected:
            raise BundleError(f"{file_path}: sha256 does not match the manifest (file changed or corrupt)")
    vectors = np.load(directory / ITEM_VECTORS, mmap_mode="r")
    if vectors.shape != (manifest.n_items, manifest.index_dim):
        raise BundleError(
            f"{directory / ITEM_VECTORS}: shape {vectors.shape}, manifest says ({manifest.n_items}, {manifest.index_dim})"
        )
    if manifest.history_tower is not None and manifest.history_tower.kind == "mean":
        table = np.load(directory / manifest.history_tower.file, mmap_mode="r")
        if table.shape != (manifest.n_items, manifest.output_dim):
            raise BundleError(
                f"{directory / manifest.history_tower.file}: shape {table.shape}, expected ({manifest.n_items}, {manifest.output_dim})"
            )
    if manifest.hybrid is not None:
        load_hybrid_arrays(directory, manifest, vectors)
    return manifest


def load_hybrid_arrays(directory: Path, manifest: Manifest, vectors: np.ndarray | None = None) -> HybridArrays:
    """A hybrid bundle's arrays, checked against the manifest and against the item vectors' flag column
    (1 exactly on the rows that are not trained, i.e. new items)."""
    spec = manifest.hybrid
    if spec is None:
        raise BundleError(f"{Path(directory) / MANIFEST}: no hybrid section")
    for name in (spec.sasrec_file, spec.arrays_file):
        if name not in manifest.files:
            raise BundleError(f"{Path(directory) / MANIFEST}: no checksum for the hybrid file {name}")
    arrays = HybridArrays.load(Path(directory) / spec.arrays_file, spec, manifest.n_items, manifest.output_dim)
    vectors = np.load(Path(directory) / ITEM_VECTORS, mmap_mode="r") if vectors is None else vectors
    if not np.array_equal(np.asarray(vectors[:, -1]) != 0, ~arrays.trained):
        raise BundleError(
            f"{Path(directory) / spec.arrays_file}: trained mask does not match the new-item flags of {ITEM_VECTORS}"
        )
    return arrays
