"""Where the tests find the repository and their fixture files, from whichever folder a test is in."""

from __future__ import annotations

from pathlib import Path

TESTS = Path(__file__).resolve().parent
REPO = TESTS.parent
FIXTURES = TESTS / "fixtures"
MOVIES = FIXTURES / "recbole" / "movies"
"""40 users x 30 movies in RecBole's atomic files: what the model, service and leakage tests train on."""
UNIT = TESTS / "unit"
"""The fast tier: no torch, no model, no server (tests/conftest.py marks every test elsewhere ``slow``)."""
