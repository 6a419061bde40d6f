"""Bring your own data (issue #17), the data side: ``r2end data add`` in every raw format, the record it
writes, how every later command resolves the name, and the errors bad raw data gets (file, line, field).

The fixtures (tests/fixtures/byod/<format>/, tests/fixtures/bookshop/) are written by
tests/fixtures/byod/make_fixtures.py; each folder's expected.json holds the counts worked out from
how the data were made, not from the loaders. The training, export and serving half is in
tests/e2e/test_byod_e2e.py (and tests/e2e/test_byod_cli.py: ``r2end train`` imports torch before it checks a name).
"""

from __future__ import annotations

import importlib.util
import json
import shutil
import sys
from pathlib import Path

import pytest
from byod_util import FORMATS, empty_home, expected, r2end
from locations import FIXTURES, REPO

from training.data import registry, userdata
from training.data.schema import DataFormatError


@pytest.fixture
def home(tmp_path, monkeypatch) -> Path:
    return empty_home(tmp_path, monkeypatch)


def _generator():
    spec = importlib.util.spec_from_file_location("make_fixtures", FIXTURES / "byod" / "make_fixtures.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up while the class is made
    spec.loader.exec_module(module)
    return module


def copy_fixture(folder: str, tmp_path: Path) -> Path:
    target = tmp_path / "raw" / Path(folder).name
    shutil.copytree(FIXTURES / folder, target)
    return target


# --------------------------------------------------------------------------- the fixtures


def test_fixtures_are_what_the_generator_writes(tmp_path):
    """The committed files are the generator's output (rerun it after changing it)."""
    written = _generator().write_all(tmp_path)
    for folder in written:
        committed = FIXTURES / folder.relative_to(tmp_path)
        for path in sorted(p for p in folder.rglob("*") if p.is_file()):
            assert (committed / path.relative_to(folder)).read_bytes() == path.read_bytes(), (
                f"{committed}: stale; run make_fixtures.py"
            )


# --------------------------------------------------------------------------- data add, per format


@pytest.mark.parametrize("fmt", FORMATS)
def test_add_records_the_dataset_and_every_name_lookup_uses_it(fmt, home):
    folder = FORMATS[fmt]
    want = expected(folder)
    name = f"mine-{fmt}"
    record, ds, warnings = registry.add_dataset(name, fmt, FIXTURES / folder)
    assert warnings == []
    assert (ds.name, ds.n_users, ds.n_items, ds.n_interactions) == (name, want["users"], want["items"], want["interactions"])
    assert ds.report["raw interactions"] == want["raw interactions"]
    assert (
        ds.report["dropped: repeated (user, item) pairs, earliest kept"]
        == want["dropped: repeated (user, item) pairs, earliest kept"]
    )
    assert ds.report["dropped: 5-core filter (2 rounds)"] == want["dropped: 5-core filter"]
    on_disk = json.loads((home / "datasets" / name / "DATASET.json").read_text())
    assert on_disk["format"] == fmt and on_disk["path"] == str((FIXTURES / folder).resolve()) and on_disk["k"] == 5
    assert on_disk["split_hash"] == ds.split_hash == record.split_hash
    again = registry.load_dataset(name)  # what train, evaluate, teach, serve --dataset ... all call
    assert again.split_hash == ds.split_hash and again.name == name
    assert again.catalog.ids == ds.catalog.ids


def test_cli_add_list_stats(home):
    folder = FORMATS["ml-latest"]
    added = r2end("data", "add", "films", "--format", "ml-latest", "--path", str(FIXTURES / folder), home=home)
    assert added.returncode == 0, added.stderr
    assert "added films: ml-latest files at" in added.stdout
    assert "dropped: repeated (user, item) pairs, earliest kept" in added.stdout  # the summary of what was dropped
    stats = r2end("data", "stats", "films", "--as-json", home=home)
    assert stats.returncode == 0, stats.stderr
    body = json.loads(stats.stdout)
    want = expected(folder)
    assert (body["users"], body["items"], body["interactions"], body["k"]) == (
        want["users"],
        want["items"],
        want["interactions"],
        5,
    )
    listed = r2end("data", "list", home=home)
    assert listed.returncode == 0 and "films" in listed.stdout and "ml-latest" in listed.stdout
    twice = r2end("data", "add", "films", "--format", "ml-latest", "--path", str(FIXTURES / folder), home=home)
    assert twice.returncode == 2 and "already added (ml-latest at" in twice.stdout and "--force" in twice.stdout
    forced = r2end(
        "data", "add", "films", "--format", "ml-latest", "--path", str(FIXTURES / folder), "--force", "--k", "3", home=home
    )
    assert forced.returncode == 0, forced.stdout
    assert userdata.load_record("films").k == 3


@pytest.mark.parametrize(
    "name, message",
    [
        ("My Data", "dataset name 'My Data'"),
        ("../up", "dataset name '../up'"),
        ("ml-100k", "'ml-100k' is an embedded dataset"),
    ],
)
def test_bad_names_are_refused(home, name, message):
    with pytest.raises(ValueError, match=message):
        registry.add_dataset(name, "recbole", FIXTURES / FORMATS["recbole"])
    assert not (home / "datasets").exists() or not any((home / "datasets").rglob("DATASET.json"))


def test_changed_raw_files_are_refused_until_added_again(home, tmp_path):
    raw = copy_fixture(FORMATS["ml-latest"], tmp_path)
    registry.add_dataset("films", "ml-latest", raw)
    _set_field(raw / "ratings.csv", 2, 3, "1900000000", ",")  # user 1's first event becomes the last: a new test target
    with pytest.raises(ValueError, match=r"files under .* changed since `r2end data add` .*--force"):
        registry.load_dataset("films")
    _, ds, _ = registry.add_dataset("films", "ml-latest", raw, force=True)
    assert registry.load_dataset("films").split_hash == ds.split_hash


def test_the_recorded_k_is_the_k(home):
    registry.add_dataset("shop", "recbole", FIXTURES / FORMATS["recbole"], k=3)
    assert registry.load_dataset("shop", k=3).name == "shop"
    with pytest.raises(ValueError, match="added with --k 3, not 5"):
        registry.load_dataset("shop", k=5)


def test_a_damaged_record_names_its_file(home):
    registry.add_dataset("shop", "recbole", FIXTURES / FORMATS["recbole"])
    record = home / "datasets" / "shop" / "DATASET.json"
    record.write_text("{not json")
    with pytest.raises(ValueError, match=f"{record}: not a valid dataset record"):
        registry.load_dataset("shop")


# --------------------------------------------------------------------------- bad raw data


def _edit(path: Path, line: int, old: str, new: str) -> None:
    lines = path.read_text().splitlines(keepends=True)
    assert old in lines[line - 1], lines[line - 1]
    lines[line - 1] = lines[line - 1].replace(old, new, 1)
    path.write_text("".join(lines))


@pytest.mark.parametrize(
    "edit, message",
    [
        (("ratings.csv", 1, ",timestamp", ",time"), "ratings.csv:1: field 'timestamp': missing column"),
        (("ratings.csv", 5, ".0,", ".0x,"), "ratings.csv:5: field 'rating': not a number:"),
        (("ratings.csv", 9, ".0,", ".0,yesterday"), "ratings.csv:9: field 'timestamp': not a number:"),
        (("movies.csv", 1, "genres", "kinds"), "movies.csv:1: field 'genres': missing column"),
    ],
)
def test_bad_rows_name_file_line_and_field_and_nothing_is_recorded(home, tmp_path, edit, message):
    raw = copy_fixture(FORMATS["ml-latest"], tmp_path)
    name, line, old, new = edit
    _edit(raw / name, line, old, new)
    with pytest.raises(DataFormatError, match=message.replace(".", r"\.")):
        registry.add_dataset("films", "ml-latest", raw)
    assert userdata.load_record("films") is None


def _set_field(path: Path, line: int, column: int, value: str, sep: str) -> None:
    lines = path.read_text().splitlines()
    values = lines[line - 1].split(sep)
    values[column] = value
    lines[line - 1] = sep.join(values)
    path.write_text("\n".join(lines) + "\n")


def test_non_finite_rating_is_refused(home, tmp_path):
    raw = copy_fixture(FORMATS["ml-latest"], tmp_path)
    _set_field(raw / "ratings.csv", 4, 2, "nan", ",")
    with pytest.raises(DataFormatError, match=r"ratings\.csv:4: field 'rating': not a finite number: 'nan'"):
        registry.add_dataset("films", "ml-latest", raw)


def test_cli_error_is_one_line_with_file_line_field(home, tmp_path):
    raw = copy_fixture(FORMATS["ml-1m"], tmp_path)
    _set_field(raw / "ratings.dat", 6, 2, "four", "::")
    result = r2end("data", "add", "films", "--format", "ml-1m", "--path", str(raw), home=home)
    assert result.returncode == 2
    assert result.stdout.strip() == f"error: {raw / 'ratings.dat'}:6: field 'rating': not a number: 'four'"
    assert result.stderr == ""


def test_items_without_metadata_warn_with_the_first_place_and_count(home):
    _, ds, warnings = registry.add_dataset("bookshop", "recbole", FIXTURES / "bookshop")
    want = expected("bookshop")
    assert (ds.n_users, ds.n_items, ds.n_interactions) == (want["users"], want["items"], want["interactions"])
    [warning] = warnings
    inter = FIXTURES / "bookshop" / "bookshop.inter"
    line = next(n for n, text in enumerate(inter.read_text().splitlines(), 1) if "\tbk10999\t" in text)
    assert warning.startswith(f"{inter.resolve()}:{line}: field 'item_id': item 'bk10999' has no metadata in ")
    assert "(1 items, 2 interactions like this;" in warning
    assert ds.report["note: items without metadata (kept, id shown as title)"] == want["items without metadata"]
    assert ds.report["dropped: 5-core filter (2 rounds)"] == want["dropped: 5-core filter"]


def test_no_item_with_metadata_is_an_error(home, tmp_path):
    raw = copy_fixture(FORMATS["ml-latest"], tmp_path)
    movies = (raw / "movies.csv").read_text().splitlines()
    (raw / "movies.csv").write_text("\n".join([movies[0]] + ["9" + row for row in movies[1:]]) + "\n")  # ids shifted: none match
    with pytest.raises(
        DataFormatError, match=r"ratings\.csv:2: field 'movieId': none of the 15 items has metadata in .*movies\.csv"
    ):
        registry.add_dataset("films", "ml-latest", raw)


def test_recbole_without_item_file_is_an_error(home, tmp_path):
    raw = copy_fixture(FORMATS["recbole"], tmp_path)
    (raw / "shop.item").unlink()
    with pytest.raises(DataFormatError, match=r"shop\.item: no item metadata \(file missing or empty\)"):
        registry.add_dataset("shop", "recbole", raw)


def test_users_too_short_for_leave_one_out(home, tmp_path):
    raw = copy_fixture(FORMATS["recbole"], tmp_path)
    inter = (raw / "shop.inter").read_text().splitlines()
    kept, seen = [inter[0]], {}
    for row in inter[1:]:  # every user's first two events only
        user = row.split("\t")[0]
        seen[user] = seen.get(user, 0) + 1
        if seen[user] <= 2:
            kept.append(row)
    (raw / "shop.inter").write_text("\n".join(kept) + "\n")
    with pytest.raises(ValueError, match=r"shop\.inter: no user has 3 or more events after the 1-core filter .*smaller --k"):
        registry.add_dataset("shop", "recbole", raw, k=1)
    _, ds, warnings = registry.add_dataset("shop", "recbole", FIXTURES / FORMATS["recbole"], k=1)
    assert ds.n_users == expected(FORMATS["recbole"])["users"]  # the fixture's 2-event user passes a 1-core, not leave-one-out
    assert ds.report["dropped: users too short for a leave-one-out split"] == 1
    assert warnings == [
        (
            f"{(FIXTURES / FORMATS['recbole'] / 'shop.inter').resolve()}: 1 users have fewer than 3 events after the 1-core "
            "filter and were dropped (leave-one-out needs a training, a validation and a test event)"
        )
    ]


def test_missing_folder_is_a_clear_error(home, tmp_path):
    with pytest.raises(FileNotFoundError, match="no such file or folder"):
        registry.add_dataset("films", "ml-latest", tmp_path / "nowhere")


# --------------------------------------------------------------------------- where an added dataset's outputs go


def test_added_datasets_keep_results_and_teacher_data_under_home(home):
    from training import paths

    registry.add_dataset("shop", "recbole", FIXTURES / FORMATS["recbole"])
    assert paths.teacher_data_dir("shop") == home / "teacher"
    assert paths.teacher_data_dir("ml-100k") == REPO / "data" / "teacher"
    assert paths.teacher_data_dir() == REPO / "data" / "teacher"
    from training.evaluation.report import results_root

    assert results_root("shop") == home / "results"
    assert results_root("ml-100k") == REPO / "docs" / "results"


def test_load_test_traffic_from_an_added_dataset(home, tmp_path):
    from loadtest.make_histories import main

    registry.add_dataset("shop", "recbole", FIXTURES / FORMATS["recbole"], k=3)
    out = main(["--dataset", "shop", "--out", str(tmp_path / "h.json")])  # the recorded k, without repeating it
    data = json.loads(out.read_text())
    assert data["dataset"] == "shop" and len(data["histories"]) == expected(FORMATS["recbole"])["users"]
