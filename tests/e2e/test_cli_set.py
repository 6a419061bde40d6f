"""Every command's ``--set`` (and ``--config-file``) checked in a real ``r2end`` process: one parser, one clean line.

Slow: ``train``, ``ablations`` and ``baseline sasrec-ce`` import torch before they parse (the parser itself
is tested in tests/unit/test_cli.py).
"""

from __future__ import annotations

import pytest
from cli_util import r2end


@pytest.mark.parametrize(
    "args, key",
    [
        (["baseline", "sasrec-ce", "ml-100k", "--set", "name=foo"], "name"),  # used to crash in json.loads
        (["baseline", "sasrec-ce", "ml-100k", "--set", "hidden=wide"], "hidden"),
        (["train", "--set", "distill_lr=fast"], "distill_lr"),
        (["train", "--set", "typo=1"], "typo"),  # used to be ignored silently
        (["ablations", "--set", "projection_dim"], "projection_dim"),
    ],
)
def test_every_command_rejects_a_bad_set_naming_the_key(tmp_path, args, key):
    result = r2end(*args, tmp_path=tmp_path)
    output = result.stdout + result.stderr
    assert result.returncode == 2, output
    assert "Traceback" not in output
    [line] = output.strip().splitlines()
    assert line.startswith("error: ") and key in line


def test_baseline_and_train_parse_set_the_same_way(tmp_path):
    """The same malformed item gets the same message from both commands (one parser)."""
    outputs = [r2end(*args, "--set", "hidden", tmp_path=tmp_path) for args in (["baseline", "sasrec-ce", "ml-100k"], ["train"])]
    assert [o.returncode for o in outputs] == [2, 2]
    assert outputs[0].stdout == outputs[1].stdout == "error: --set 'hidden': expected key=value\n"


def test_config_file_keys_are_checked_like_set(tmp_path):
    config = tmp_path / "config.json"
    config.write_text('{"projection_dim": 256, "projecton_epochs": 3}')
    result = r2end("train", "--config-file", str(config), tmp_path=tmp_path)
    assert result.returncode == 2
    assert result.stdout.startswith(f"error: {config}: projecton_epochs: not a R2ENDConfig field; known: dataset, variant,")
