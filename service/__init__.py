"""The online R2END service: FastAPI + ONNX Runtime + FAISS serving one model bundle (no torch, no LLM).

Imports go one way: ``service`` -> ``index``. Nothing here imports ``training``.
"""
