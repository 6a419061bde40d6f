"""Bad input fails loudly with a DataFormatError naming the file, the line and the field.

Every case starts from a good fixture copied into tmp_path and breaks one thing.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import read_gz, write_gz
from locations import REPO

from training.data import amazon, movielens, recbole, yelp
from training.data.registry import load_raw
from training.data.schema import DataFormatError


def check(exc_info, path: Path, line: int, field: str | None, reason: str) -> DataFormatError:
    """The error names ``path``, ``line`` and ``field`` (attributes and message) and says ``reason``."""
    exc = exc_info.value
    assert isinstance(exc, DataFormatError)
    assert exc.path == str(path)
    assert exc.line == line
    assert exc.field == field
    message = str(exc)
    assert message.startswith(f"{path}:{line}:" if line else f"{path}:")
    if field is not None:
        assert repr(field) in message
    assert reason in message
    return exc


def replace_line(path: Path, line_no: int, new: str, gz: bool = False, encoding: str = "utf-8") -> None:
    """Replace 1-based line ``line_no`` of a text or gz file."""
    text = read_gz(path) if gz else path.read_text(encoding=encoding)
    lines = text.splitlines()
    lines[line_no - 1] = new
    out = "\n".join(lines) + "\n"
    if gz:
        write_gz(path, out)
    else:
        path.write_text(out, encoding=encoding)


# --------------------------------------------------------------------------- missing files


@pytest.mark.parametrize(
    "fmt, folder, remove",
    [
        ("ml-100k", "ml-100k", "u.item"),
        ("ml-100k", "ml-100k", "u.data"),
        ("ml-1m", "ml-1m", "movies.dat"),
        ("ml-latest", "ml-latest", "movies.csv"),
        ("ml-latest", "ml-latest", "ratings.csv"),
        ("yelp", "yelp", "yelp_academic_dataset_business.json"),
        ("yelp", "yelp", "yelp_academic_dataset_review.json"),
        ("recbole", "recbole/toy", "toy.inter"),
    ],
)
def test_missing_file(fixture_copy, fmt, folder, remove):
    directory = fixture_copy(folder)
    (directory / remove).unlink()
    with pytest.raises(DataFormatError) as info:
        load_raw(fmt, directory)
    check(info, directory / remove, 0, None, "file not found")


def test_missing_amazon_meta(fixture_copy):
    directory = fixture_copy("amazon2014")
    (directory / "meta_Beauty.json.gz").unlink()
    with pytest.raises(DataFormatError) as info:
        amazon.load_amazon_2014(directory)
    check(info, directory / "meta_Beauty.json.gz", 0, None, "expected exactly one 2014 metadata (meta_Beauty) file, found none")


def test_missing_amazon_directory(tmp_path):
    with pytest.raises(DataFormatError) as info:
        amazon.load_amazon_2018(tmp_path / "nowhere")
    assert info.value.path.startswith(str(tmp_path / "nowhere"))
    assert "expected exactly one 2018 review file" in str(info.value)


def test_two_amazon_review_files_are_ambiguous(fixture_copy):
    directory = fixture_copy("amazon2014")
    shutil.copy(directory / "reviews_Beauty_5.json.gz", directory / "reviews_Toys_5.json.gz")
    with pytest.raises(DataFormatError, match="reviews_Beauty_5.json.gz', 'reviews_Toys_5.json.gz"):
        amazon.load_amazon_2014(directory)


def test_not_really_gzip(fixture_copy):
    directory = fixture_copy("amazon2018")
    path = directory / "Luxury_Beauty_5.json.gz"
    path.write_text('{"overall": 5.0}\n')
    with pytest.raises(DataFormatError) as info:
        amazon.load_amazon_2018(directory)
    check(info, path, 0, None, "cannot read file")


def test_not_utf8(fixture_copy):
    directory = fixture_copy("yelp")
    path = directory / "yelp_academic_dataset_review.json"
    path.write_bytes(path.read_bytes() + '{"review_id": "Caf\u00e9"}\n'.encode("latin-1"))
    with pytest.raises(DataFormatError) as info:
        yelp.load_yelp(directory)
    check(info, path, 0, None, "not valid utf-8 text")


# --------------------------------------------------------------------------- malformed lines


def test_bad_json_line(fixture_copy):
    directory = fixture_copy("amazon2014")
    path = directory / "reviews_Beauty_5.json.gz"
    replace_line(path, 3, '{"reviewerID": "A1YJEY40YUW4SE", "asin": "B00004U9V2", "overall": 4.0,', gz=True)
    with pytest.raises(DataFormatError) as info:
        amazon.load_amazon_2014(directory)
    check(info, path, 3, None, "malformed JSON line")


def test_blank_lines_keep_physical_line_numbers(fixture_copy):
    directory = fixture_copy("yelp")
    path = directory / "yelp_academic_dataset_review.json"
    lines = path.read_text(encoding="utf-8").splitlines()
    lines[1:1] = ["", "   "]  # two blank lines after line 1: old line 4 is now line 6
    lines[5] = "{'review_id': 'single quotes are not JSON'}"
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    with pytest.raises(DataFormatError) as info:
        yelp.load_yelp(directory)
    check(info, path, 6, None, "malformed JSON line")


def test_json_line_not_an_object(fixture_copy):
    directory = fixture_copy("yelp")
    path = directory / "yelp_academic_dataset_business.json"
    replace_line(path, 2, '["mpf3x-BjTdTEA3yCZrAYPw", "The UPS Store"]')
    with pytest.raises(DataFormatError) as info:
        yelp.load_yelp(directory)
    check(info, path, 2, None, "expected an object, got list")


@pytest.mark.parametrize(
    "bad",
    [
        "{'asin': 'B00012345X', 'title': 'Folding Travel Hair Brush}",  # unterminated string
        "{'asin': 'B00012345X', 'title': __import__('os').getcwd()}",  # not a literal: never evaluated
        "{'asin': 'B00012345X', ['not', 'hashable']: 1}",  # literal, but not a valid dict
    ],
)
def test_bad_python_literal_line(fixture_copy, bad):
    directory = fixture_copy("amazon2014")
    path = directory / "meta_Beauty.json.gz"
    replace_line(path, 4, bad, gz=True)
    with pytest.raises(DataFormatError) as info:
        amazon.load_amazon_2014(directory)
    check(info, path, 4, None, "malformed Python-literal dict line")


def test_2014_meta_strict_json_is_still_read(fixture_copy):
    """Some mirrors re-export the 2014 meta as JSON; JSON without true/false/null is a Python literal too."""
    directory = fixture_copy("amazon2014")
    path = directory / "meta_Beauty.json.gz"
    replace_line(
        path, 4, '{"asin": "B00012345X", "title": "Folding Travel Hair Brush", "categories": [["Beauty", "Hair Care"]]}', gz=True
    )
    raw = amazon.load_amazon_2014(directory)
    assert raw.items["B00012345X"].categories == ("Hair Care",)


@pytest.mark.parametrize(
    "fmt, folder, filename, line_no, bad, field, encoding",
    [
        ("ml-100k", "ml-100k", "u.data", 4, "186\t1\t3", "timestamp", "utf-8"),
        (
            "ml-100k",
            "ml-100k",
            "u.item",
            2,
            "2|GoldenEye (1995)|01-Jan-1995||http://x|0|1|1|0|0|0|0|0|0|0|0|0|0|0|0|0|1|0",
            "Western",
            "latin-1",
        ),
        ("ml-1m", "ml-1m", "ratings.dat", 5, "2::3863::3", "timestamp", "latin-1"),
        ("ml-1m", "ml-1m", "movies.dat", 3, "73", "title", "latin-1"),
    ],
)
def test_too_few_columns(fixture_copy, fmt, folder, filename, line_no, bad, field, encoding):
    directory = fixture_copy(folder)
    path = directory / filename
    replace_line(path, line_no, bad, encoding=encoding)
    with pytest.raises(DataFormatError) as info:
        load_raw(fmt, directory)
    check(info, path, line_no, field, "-separated fields, got")


@pytest.mark.parametrize(
    "fmt, folder, filename, line_no, bad",
    [
        ("ml-100k", "ml-100k", "u.data", 2, "196\t2\t4\t881250950\t5"),
        ("ml-1m", "ml-1m", "ratings.dat", 2, "1::1::4::978302109::extra"),
    ],
)
def test_too_many_columns(fixture_copy, fmt, folder, filename, line_no, bad):
    directory = fixture_copy(folder)
    path = directory / filename
    replace_line(path, line_no, bad, encoding="latin-1")
    with pytest.raises(DataFormatError) as info:
        load_raw(fmt, directory)
    check(info, path, line_no, None, "-separated fields, got 5")


def test_recbole_wrong_number_of_columns(fixture_copy):
    directory = fixture_copy("recbole/toy")
    path = directory / "toy.inter"
    replace_line(path, 3, "186\t302\t3")
    with pytest.raises(DataFormatError) as info:
        recbole.load_recbole(directory)
    check(info, path, 3, None, "expected 4 tab-separated values, got 3")


@pytest.mark.parametrize("bad", ["1,11,3.5", "1,11,3.5,964981247,oops"])
def test_csv_wrong_number_of_columns(fixture_copy, bad):
    directory = fixture_copy("ml-latest")
    path = directory / "ratings.csv"
    replace_line(path, 3, bad)
    with pytest.raises(DataFormatError) as info:
        movielens.load_ml_latest(directory)
    check(info, path, 3, None, "wrong number of CSV columns")


# --------------------------------------------------------------------------- headers


def test_recbole_missing_column(fixture_copy):
    directory = fixture_copy("recbole/toy")
    path = directory / "toy.inter"
    replace_line(path, 1, "user_id:token\titem_id:token\trating:float\ttime:float")
    with pytest.raises(DataFormatError) as info:
        recbole.load_recbole(directory)
    check(info, path, 1, "timestamp", "missing column")


def test_recbole_item_file_missing_item_id(fixture_copy):
    directory = fixture_copy("recbole/toy")
    path = directory / "toy.item"
    replace_line(path, 1, "id:token\tmovie_title:token_seq\trelease_year:token\tclass:token_seq")
    with pytest.raises(DataFormatError) as info:
        recbole.load_recbole(directory)
    check(info, path, 1, "item_id", "missing column")


def test_recbole_header_after_blank_lines(fixture_copy):
    directory = fixture_copy("recbole/toy")
    path = directory / "toy.inter"
    path.write_text("\n\nuser_id:token\titem_id:token\n196\t242\n", encoding="utf-8")
    with pytest.raises(DataFormatError) as info:
        recbole.load_recbole(directory)
    check(info, path, 3, "timestamp", "missing column")


def test_recbole_empty_file(fixture_copy):
    directory = fixture_copy("recbole/toy")
    path = directory / "toy.inter"
    path.write_text("\n", encoding="utf-8")
    with pytest.raises(DataFormatError) as info:
        recbole.load_recbole(directory)
    check(info, path, 1, None, "empty file: no header")


def test_recbole_duplicate_item(fixture_copy):
    directory = fixture_copy("recbole/toy")
    path = directory / "toy.item"
    with open(path, "a", encoding="utf-8") as handle:
        handle.write("242\tKolya again\t1996\tComedy\n")
    with pytest.raises(DataFormatError) as info:
        recbole.load_recbole(directory)
    check(info, path, 6, "item_id", "duplicate item id '242'")


@pytest.mark.parametrize(
    "filename, header, field",
    [("ratings.csv", "userId,movieId,rating,time", "timestamp"), ("movies.csv", "movieId,name,genres", "title")],
)
def test_csv_missing_column(fixture_copy, filename, header, field):
    directory = fixture_copy("ml-latest")
    path = directory / filename
    replace_line(path, 1, header)
    with pytest.raises(DataFormatError) as info:
        movielens.load_ml_latest(directory)
    check(info, path, 1, field, "missing column")


# --------------------------------------------------------------------------- missing required fields


@pytest.mark.parametrize(
    "folder, filename, line_no, bad, field",
    [
        (
            "amazon2014",
            "reviews_Beauty_5.json.gz",
            2,
            '{"asin": "B0000530HU", "overall": 2.0, "unixReviewTime": 1325376000}',
            "reviewerID",
        ),
        (
            "amazon2014",
            "reviews_Beauty_5.json.gz",
            5,
            '{"reviewerID": "A3G6XNM240RMWA", "asin": "", "unixReviewTime": 1400000000}',
            "asin",
        ),
        (
            "amazon2014",
            "reviews_Beauty_5.json.gz",
            7,
            '{"reviewerID": "A3G6XNM240RMWA", "asin": "7806397051", "unixReviewTime": null}',
            "unixReviewTime",
        ),
        ("amazon2014", "meta_Beauty.json.gz", 3, "{'title': 'No asin here', 'categories': [['Beauty']]}", "asin"),
        ("amazon2018", "meta_Luxury_Beauty.json.gz", 2, '{"category": [], "title": "x", "price": ""}', "asin"),
        (
            "amazon2018",
            "Luxury_Beauty_5.json.gz",
            4,
            '{"overall": 3.0, "reviewerID": "A2HOI48JK8838M", "asin": "B00004U9V2"}',
            "unixReviewTime",
        ),
    ],
)
def test_amazon_missing_required_field(fixture_copy, folder, filename, line_no, bad, field):
    directory = fixture_copy(folder)
    path = directory / filename
    replace_line(path, line_no, bad, gz=True)
    with pytest.raises(DataFormatError) as info:
        load_raw("amazon-2014" if folder == "amazon2014" else "amazon-2018", directory)
    check(info, path, line_no, field, "missing required field")


@pytest.mark.parametrize(
    "filename, line_no, bad, field",
    [
        (
            "yelp_academic_dataset_review.json",
            3,
            '{"review_id":"x1","user_id":"8g_iMtfSiwikVnbP2etR0A","stars":3.0,"date":"2014-02-05 20:30:30"}',
            "business_id",
        ),
        (
            "yelp_academic_dataset_review.json",
            2,
            '{"review_id":"x2","business_id":"b","user_id":"u","stars":5.0,"date":""}',
            "date",
        ),
        ("yelp_academic_dataset_review.json", 1, '{"user_id":"u","business_id":"b","date":"2018-07-07 22:09:11"}', "review_id"),
        ("yelp_academic_dataset_business.json", 4, '{"name":"St Honore Pastries","categories":"Bakeries"}', "business_id"),
    ],
)
def test_yelp_missing_required_field(fixture_copy, filename, line_no, bad, field):
    directory = fixture_copy("yelp")
    path = directory / filename
    replace_line(path, line_no, bad)
    with pytest.raises(DataFormatError) as info:
        yelp.load_yelp(directory)
    check(info, path, line_no, field, "missing required field")


@pytest.mark.parametrize(
    "folder, filename, line_no, bad, field",
    [
        ("recbole/toy", "toy.inter", 4, "\t302\t4\t881250960", "user_id"),
        ("ml-1m", "ratings.dat", 3, "1:: ::3::978301968", "movie_id"),
    ],
)
def test_empty_id(fixture_copy, folder, filename, line_no, bad, field):
    directory = fixture_copy(folder)
    path = directory / filename
    replace_line(path, line_no, bad, encoding="latin-1")
    with pytest.raises(DataFormatError) as info:
        load_raw("recbole" if folder.startswith("recbole") else "ml-1m", directory)
    check(info, path, line_no, field, "empty value")


# --------------------------------------------------------------------------- wrong types and values


@pytest.mark.parametrize(
    "fmt, folder, filename, line_no, bad, field, gz",
    [
        (
            "amazon-2014",
            "amazon2014",
            "reviews_Beauty_5.json.gz",
            4,
            '{"reviewerID": "A60XNB876KYML", "asin": "7806397051", "overall": 5.0, "unixReviewTime": "03 1, 2012"}',
            "unixReviewTime",
            True,
        ),
        (
            "amazon-2018",
            "amazon2018",
            "Luxury_Beauty_5.json.gz",
            2,
            '{"overall": 4.0, "reviewerID": "A1KXONFPU2XQ5K", "asin": "B00004U9V2", "unixReviewTime": "soon"}',
            "unixReviewTime",
            True,
        ),
        (
            "amazon-2014",
            "amazon2014",
            "reviews_Beauty_5.json.gz",
            1,
            '{"reviewerID": "A1YJEY40YUW4SE", "asin": "B0000530HU", "overall": "five", "unixReviewTime": 1391040000}',
            "overall",
            True,
        ),
        ("ml-100k", "ml-100k", "u.data", 6, "186\t3\t1\tyesterday", "timestamp", False),
        ("ml-1m", "ml-1m", "ratings.dat", 2, "1::1::4::97830210x", "timestamp", False),
        ("ml-1m", "ml-1m", "ratings.dat", 9, "3::73::four::978298147", "rating", False),
        ("ml-latest", "ml-latest", "ratings.csv", 4, "1,750,5.0,2000-07-30", "timestamp", False),
        ("recbole", "recbole/toy", "toy.inter", 2, "196\t242\t3\tnan", "timestamp", False),
        ("recbole", "recbole/toy", "toy.inter", 3, "186\t302\t3\t", "timestamp", False),
    ],
)
def test_non_numeric(fixture_copy, fmt, folder, filename, line_no, bad, field, gz):
    directory = fixture_copy(folder)
    path = directory / filename
    replace_line(path, line_no, bad, gz=gz, encoding="latin-1")
    with pytest.raises(DataFormatError) as info:
        load_raw(fmt, directory)
    check(info, path, line_no, field, "number")


@pytest.mark.parametrize("bad_date", ["07/07/2018 22:09:11", "2018-07-07T22:09:11", "2018-13-01 00:00:00"])
def test_yelp_bad_date(fixture_copy, bad_date):
    directory = fixture_copy("yelp")
    path = directory / "yelp_academic_dataset_review.json"
    replace_line(path, 2, f'{{"review_id":"r","user_id":"u","business_id":"b","stars":5.0,"date":"{bad_date}"}}')
    with pytest.raises(DataFormatError) as info:
        yelp.load_yelp(directory)
    check(info, path, 2, "date", "expected 'YYYY-MM-DD HH:MM:SS'")


def test_yelp_categories_not_a_string(fixture_copy):
    directory = fixture_copy("yelp")
    path = directory / "yelp_academic_dataset_business.json"
    replace_line(path, 3, '{"business_id":"tUFrWirKiKi_TAnsVWINQQ","name":"Target","categories":["Shopping"]}')
    with pytest.raises(DataFormatError) as info:
        yelp.load_yelp(directory)
    check(info, path, 3, "categories", "expected a comma-separated string or null")


def test_amazon2014_categories_not_a_list_of_lists(fixture_copy):
    directory = fixture_copy("amazon2014")
    path = directory / "meta_Beauty.json.gz"
    replace_line(path, 5, "{'asin': 'B0009RF9DW', 'title': 'Polish', 'categories': ['Beauty', 'Makeup']}", gz=True)
    with pytest.raises(DataFormatError) as info:
        amazon.load_amazon_2014(directory)
    check(info, path, 5, "categories", "expected a list of category paths")


def test_amazon2018_category_not_a_list(fixture_copy):
    directory = fixture_copy("amazon2018")
    path = directory / "meta_Luxury_Beauty.json.gz"
    replace_line(path, 4, '{"asin": "B07XYZ1234", "title": "Set", "category": "Luxury Beauty"}', gz=True)
    with pytest.raises(DataFormatError) as info:
        amazon.load_amazon_2018(directory)
    check(info, path, 4, "category", "expected a list of strings")


def test_recbole_bad_price(fixture_copy):
    directory = fixture_copy("recbole/toy")
    path = directory / "toy.item"
    path.write_text("item_id:token\ttitle:token_seq\tprice:float\n242\tKolya\tcheap\n", encoding="utf-8")
    with pytest.raises(DataFormatError) as info:
        recbole.load_recbole(directory)
    check(info, path, 2, "price", "not a number: 'cheap'")


# --------------------------------------------------------------------------- the CLI


def _cli(*args: str, tmp_path: Path) -> subprocess.CompletedProcess:
    env = dict(os.environ, PYTHONPATH=str(REPO), R2END_HOME=str(tmp_path / "home"), COLUMNS="60", NO_COLOR="1")
    return subprocess.run(
        [sys.executable, "-m", "training.cli", *args], check=False, cwd=REPO, env=env, capture_output=True, text=True, timeout=120
    )


def test_cli_reports_file_line_and_field(fixture_copy, tmp_path):
    # a long folder name: the file:line must survive on one line even on a narrow terminal
    directory = fixture_copy("amazon2014").rename(tmp_path / ("bad-[amazon]-" + "x" * 60))
    path = directory / "reviews_Beauty_5.json.gz"
    replace_line(path, 4, '{"reviewerID": "A60XNB876KYML", "asin": "7806397051", "unixReviewTime": "yesterday"}', gz=True)
    result = _cli("data", "stats", "x", "--format", "amazon-2014", "--path", str(directory), tmp_path=tmp_path)
    assert result.returncode == 2, result.stdout + result.stderr
    output = result.stdout + result.stderr
    assert f"{path}:4:" in output
    assert "'unixReviewTime'" in output
    assert "'yesterday'" in output
    assert "Traceback" not in output


def test_cli_missing_file(tmp_path):
    result = _cli("data", "stats", "x", "--format", "ml-100k", "--path", str(tmp_path / "nothing"), tmp_path=tmp_path)
    assert result.returncode == 2
    assert f"{tmp_path / 'nothing' / 'u.data'}: file not found" in result.stdout + result.stderr
