"""The ``r2end`` command: one ``--set`` parser for every command, clean one-line errors, quiet logs.

The commands whose ``--set`` is checked in a real process import torch first: tests/e2e/test_cli_set.py.
"""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap

import pytest
from cli_util import r2end
from locations import REPO
from pydantic import BaseModel

from training.cli.common import parse_sets


class Knobs(BaseModel):
    hidden: int = 64
    name: str = "x"
    cf: dict | None = None


# --------------------------------------------------------------------------- the --set parser


def test_set_values_are_json_else_strings():
    assert parse_sets(["hidden=128", "name=foo", 'cf={"design": "history-tower"}', "name=a=b"], Knobs) == {
        "hidden": 128,
        "name": "a=b",
        "cf": {"design": "history-tower"},
    }
    assert parse_sets([], Knobs) == {}


@pytest.mark.parametrize(
    "item, message",
    [
        ("hidden", "--set 'hidden': expected key=value"),
        ("=3", "--set '=3': expected key=value"),
        ("hiden=3", "--set hiden: not a Knobs field; known: hidden, name, cf"),
    ],
)
def test_set_rejects_malformed_items_and_unknown_keys(item, message):
    with pytest.raises(ValueError) as info:
        parse_sets([item], Knobs)
    assert str(info.value) == message


def test_a_known_variant_brings_its_settings_and_set_overrides_them(tmp_path):
    """`r2end train --variant text-hybrid` is text-hybrid (the preset of training/r2end/config.py), not r2end renamed;
    --set wins over the preset, and an unknown variant name only names the run."""
    from training.cli.model import _r2end_config

    hybrid = _r2end_config("ml-100k", "text-hybrid", None, [])
    assert (hybrid.rationale, hybrid.item_text, hybrid.hybrid) == ("item", "metadata", {})
    tuned = _r2end_config("ml-100k", "text-hybrid", None, ['hybrid={"weights": [0.5]}', "rationale=oracle"])
    assert (tuned.rationale, tuned.hybrid) == ("oracle", {"weights": [0.5]})
    plain = _r2end_config("ml-100k", "my-run", None, [])
    assert plain.model_dump(exclude={"variant"}) == _r2end_config("ml-100k", "r2end", None, []).model_dump(exclude={"variant"})


def test_ablations_refuse_a_cold_share_given_by_set(tmp_path):
    """`--set cold_start_share` was silently overwritten by --cold-start's default (0): it is refused, naming the option."""
    out = r2end("ablations", "--only", "r2end", "--set", "cold_start_share=0.1", tmp_path=tmp_path)
    assert out.returncode == 2 and "error: --set cold_start_share: use --cold-start SHARE" in out.stdout


# --------------------------------------------------------------------------- serve


def test_serve_without_a_bundle_is_one_clean_line(tmp_path):
    result = r2end("serve", tmp_path=tmp_path)
    output = result.stdout + result.stderr
    assert result.returncode != 0
    assert "Traceback" not in output
    assert output.strip().splitlines() == ["r2end serve: invalid settings: R2END_BUNDLE_PATH: Field required"]


# --------------------------------------------------------------------------- logging


LOG_PROBE = textwrap.dedent("""
    import logging, sys, warnings
    from training.cli.common import setup_logging
    setup_logging(verbose=sys.argv[1] == "verbose")
    logging.getLogger("training.r2end.pipeline").info("own progress")
    logging.getLogger("training.export").debug("own detail")
    logging.getLogger("torch.onnx").warning("exporter note")
    logging.warning("quantizer pre-processing hint")  # onnxruntime logs on the root logger
    warnings.warn("widget examples")
    logging.getLogger("onnxruntime").error("a real failure")
    import os
    print(os.environ.get("TORCH_LOGS"), os.environ.get("TQDM_DISABLE"), os.environ.get("TRANSFORMERS_VERBOSITY"))  # read by them at import
""")
QUIET_SWITCHES = ("TORCH_LOGS", "TQDM_DISABLE", "TRANSFORMERS_VERBOSITY", "DATASETS_VERBOSITY")


@pytest.mark.parametrize("mode", ["quiet", "verbose"])
def test_third_party_logs_only_with_verbose(mode):
    env = {k: v for k, v in os.environ.items() if k not in QUIET_SWITCHES}
    result = subprocess.run(
        [sys.executable, "-c", LOG_PROBE, mode],
        check=False,
        cwd=REPO,
        env=dict(env, PYTHONPATH=str(REPO), COLUMNS="200"),
        capture_output=True,
        text=True,
        timeout=900,
    )
    assert result.returncode == 0, result.stderr
    # logs go to stderr (stdout is for results); the libraries with their own handlers and bars are switched off
    assert result.stdout == ("-all 1 error\n" if mode == "quiet" else "None None None\n")
    shown = {
        message
        for message in (
            "own progress",
            "own detail",
            "exporter note",
            "quantizer pre-processing hint",
            "widget examples",
            "a real failure",
        )
        if message in result.stderr
    }
    if mode == "quiet":
        assert shown == {"own progress", "a real failure"}
    else:
        assert shown == {
            "own progress",
            "own detail",
            "exporter note",
            "quantizer pre-processing hint",
            "widget examples",
            "a real failure",
        }


def test_verbose_is_a_global_option(tmp_path):
    assert "--verbose" in r2end("--help", tmp_path=tmp_path).stdout
    result = r2end("--verbose", "data", "stats", "nope", tmp_path=tmp_path)
    assert result.returncode == 2 and "unknown dataset 'nope'" in result.stdout


# --------------------------------------------------------------------------- teach sample


def test_teach_sample_is_a_seeded_draw_of_usable_or_flagged_records(tmp_path):
    """docs/TEACHER.md quotes `r2end teach sample`: the same seed gives the same records, --flagged only flagged ones."""
    import json

    folder = tmp_path / "teacher" / "toy"
    folder.mkdir(parents=True)
    records = [
        {"key": f"k{i}", "subject": f"user:{i}", "status": "ok" if i % 4 else "flagged", "model": "m", "text": f"text {i}"}
        for i in range(20)
    ]
    records[4]["problem"] = "too short"
    (folder / "oracle.jsonl").write_text("".join(json.dumps(r) + "\n" for r in records))
    base = ["teach", "sample", "toy", "--model", "m", "--data-dir", str(tmp_path / "teacher"), "--n", "3"]

    first, again = (r2end(*base, "--seed", "7", tmp_path=tmp_path) for _ in range(2))
    assert first.returncode == 0, first.stderr
    assert first.stdout == again.stdout and first.stdout.startswith("3 of 15 ok oracle records")
    assert first.stdout.count("**user:") == 3 and "flagged" not in first.stdout.split("\n", 1)[1]
    flagged = r2end(*base, "--flagged", "--n", "9", tmp_path=tmp_path)
    assert flagged.stdout.startswith("5 of 5 flagged") and "**user:4** (2 words, too short):" in flagged.stdout
    named = r2end(*base, "--subject", "user:4", "--subject", "user:5", tmp_path=tmp_path)
    assert named.stdout.startswith("2 oracle records") and "**user:4** (2 words, too short, flagged):" in named.stdout
    assert "**user:5** (2 words):" in named.stdout
    unknown = r2end(*base, "--subject", "user:99", tmp_path=tmp_path)
    assert unknown.returncode == 2 and "no m record for user:99" in unknown.stdout
    wrong = r2end("teach", "sample", "toy", "--kind", "rationale", "--data-dir", str(tmp_path / "teacher"), tmp_path=tmp_path)
    assert wrong.returncode == 2 and "error: --kind 'rationale': expected one of oracle, description, unguided" in wrong.stdout
