"""A tiny text encoder for tests that run the whole training path in CI's budget (every stage real, the model too small to mean anything)."""

from __future__ import annotations

from pathlib import Path


def build_tiny_encoder(root: Path) -> Path:
    """A sentence-transformers folder under ``root``: 1-layer BERT (hidden 32) with MiniLM's tokenizer, mean pooling, normalisation."""
    import torch
    from sentence_transformers import SentenceTransformer
    from sentence_transformers.base.modules.normalize import Normalize
    from sentence_transformers.base.modules.transformer import Transformer
    from sentence_transformers.sentence_transformer.modules.pooling import Pooling
    from transformers import AutoTokenizer, BertConfig, BertModel

    from training.encoders import encoder_path

    tokenizer = AutoTokenizer.from_pretrained(str(encoder_path("all-MiniLM-L6-v2")), local_files_only=True)
    torch.manual_seed(0)
    config = BertConfig(
        vocab_size=tokenizer.vocab_size,
        hidden_size=32,
        num_hidden_layers=1,
        num_attention_heads=2,
        intermediate_size=64,
        max_position_embeddings=128,
    )
    BertModel(config).save_pretrained(root / "bert")
    tokenizer.save_pretrained(root / "bert")
    model = SentenceTransformer(
        modules=[Transformer(str(root / "bert"), max_seq_length=64), Pooling(32, "mean"), Normalize()], device="cpu"
    )
    model.save(str(root / "tiny"))
    return root / "tiny"
