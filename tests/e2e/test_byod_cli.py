"""``r2end train --dataset NAME`` for a name never added says how to add it (issue #17's report).

Slow only because ``r2end train`` imports torch before it resolves the name; the rest of the data side
is tests/unit/test_byod_data.py.
"""

from __future__ import annotations

from pathlib import Path

import pytest
from byod_util import FORMATS, empty_home, r2end
from locations import FIXTURES

from training.data import registry


@pytest.fixture
def home(tmp_path, monkeypatch) -> Path:
    return empty_home(tmp_path, monkeypatch)


def test_unknown_name_says_how_to_add_it(home):
    registry.add_dataset("shop", "recbole", FIXTURES / FORMATS["recbole"])
    with pytest.raises(ValueError) as info:
        registry.load_dataset("mydata")
    message = str(info.value)
    assert "unknown dataset 'mydata'" in message and "added: ['shop']" in message
    assert "r2end data add mydata --format FORMAT --path DIR" in message
    train = r2end("train", "--dataset", "mydata", home=home)  # the command of the issue report
    assert train.returncode == 2 and "r2end data add mydata" in train.stdout and "Traceback" not in train.stderr
