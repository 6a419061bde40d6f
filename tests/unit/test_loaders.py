"""Every loader on a hand-written fixture in the source's real layout.

The fixtures (tests/fixtures/<source>/) are tiny but carry the awkward parts
of the real files: exact duplicate review lines, items with no title, HTML and
entities, Python-literal metadata with mixed quoting, unicode, items with
metadata but no reviews and reviews whose item has no metadata.
"""

from __future__ import annotations

import calendar
import shutil
import time
from pathlib import Path

import pytest
from locations import FIXTURES

from training.data import amazon, movielens, recbole, yelp
from training.data.preprocess import prepare
from training.data.registry import LOADERS, load_raw


def _utc(text: str) -> int:
    return calendar.timegm(time.strptime(text, "%Y-%m-%d %H:%M:%S"))


def _pairs(raw) -> list[tuple[str, str, int]]:
    return [(i.user_id, i.item_id, i.timestamp) for i in raw.interactions]


# --------------------------------------------------------------------------- Amazon 2014


@pytest.fixture(scope="module")
def amazon14():
    return amazon.load_amazon_2014(FIXTURES / "amazon2014")


def test_amazon2014_interactions_and_exact_duplicate(amazon14):
    assert amazon14.name == "amazon14-beauty"
    # 12 review lines, one of them an exact repeat of line 3
    assert len(amazon14.interactions) == 11
    assert amazon14.dropped == {"duplicate review lines (identical user, item, time, text)": 1}
    andrea = [(i.item_id, i.timestamp) for i in amazon14.interactions if i.user_id == "A1YJEY40YUW4SE"]
    assert andrea == [("B0000530HU", 1391040000), ("B00004U9V2", 1391126400), ("7806397051", 1393632000)]
    first = amazon14.interactions[0]
    assert first.rating == 5.0
    # summary, then review text; HTML break and entity cleaned
    assert first.review == "Love it Very nice cream, absorbs fast and does not leave my face greasy."
    hand_cream = next(i for i in amazon14.interactions if i.user_id == "A1YJEY40YUW4SE" and i.item_id == "B00004U9V2")
    assert hand_cream.review == "Good hand cream Works great & smells nice. Would buy again."


def test_amazon2014_unicode_review(amazon14):
    review = next(i.review for i in amazon14.interactions if i.user_id == "A60XNB876KYML" and i.item_id == "7806397051")
    assert review == "Magnifique Très bon produit — j'adore ✨ la texture."


def test_amazon2014_python_literal_meta(amazon14):
    items = amazon14.items
    # five meta lines, including one item nobody reviewed; the reviewed-but-unlisted asin is absent
    assert set(items) == {"B0000530HU", "B00004U9V2", "7806397051", "B00012345X", "B0009RF9DW"}
    assert "B000FI4S1E" not in items
    loreal = items["B0000530HU"]
    # double-quoted Python literal because of the apostrophe
    assert loreal.title == "L'Oreal Paris Dermo-Expertise Hydra Renewal Daily Moisturizer, 1.7 Ounce"
    assert loreal.brand == "L'Oreal Paris"
    assert loreal.price == 12.5
    # root category dropped, most specific kept
    assert loreal.categories == ("Skin Care", "Face", "Creams & Moisturizers")
    # escapes inside a Python literal (\xe8, \u2013) decoded
    assert items["7806397051"].title == "Crème de la Mer – Moisturizing Cream"
    assert items["7806397051"].description == "Légendaire. The cream that started it all."
    # several category paths: the longest wins, at most three levels from its end
    assert items["7806397051"].categories == ("Body", "Moisturizers", "Creams")
    assert items["B00012345X"].price is None and items["B00012345X"].brand is None


def test_amazon2014_missing_title_and_html_description(amazon14):
    hand = amazon14.items["B00004U9V2"]
    assert hand.title == ""
    assert amazon14.notes == {"items with no title in metadata": 1}
    assert hand.description == "Soft & silky hands Use daily — after washing."
    assert "<" not in hand.description and "&" + "amp;" not in hand.description
    assert hand.brand == "Crabtree & Evelyn"


def test_amazon2014_prepare_keeps_item_without_meta(amazon14):
    ds = prepare(amazon14, k=2)
    # A1PQFP6SAJ6D80 has one review, B00012345X one reviewer: both fall out of the 2-core
    assert ds.users == ["A1YJEY40YUW4SE", "A3G6XNM240RMWA", "A60XNB876KYML"]
    assert sorted(ds.catalog.ids) == sorted(["B0000530HU", "B00004U9V2", "7806397051", "B000FI4S1E"])
    assert ds.n_interactions == 10
    assert ds.catalog["B000FI4S1E"].title == ""
    assert ds.report["note: items without metadata (kept, id shown as title)"] == 1
    assert ds.report["loader dropped: duplicate review lines (identical user, item, time, text)"] == 1
    assert ds.report["loader note: items with no title in metadata"] == 1


def test_amazon2014_accepts_the_review_file_as_path(amazon14):
    raw = amazon.load_amazon_2014(FIXTURES / "amazon2014" / "reviews_Beauty_5.json.gz")
    assert raw.items == amazon14.items
    assert raw.interactions == amazon14.interactions


def test_amazon2014_uncompressed_files(tmp_path):
    import gzip

    for name in ("reviews_Beauty_5.json", "meta_Beauty.json"):
        with gzip.open(FIXTURES / "amazon2014" / (name + ".gz"), "rb") as src:
            (tmp_path / name).write_bytes(src.read())
    raw = amazon.load_amazon_2014(tmp_path)
    assert len(raw.interactions) == 11 and len(raw.items) == 5


# --------------------------------------------------------------------------- Amazon 2018


@pytest.fixture(scope="module")
def amazon18():
    return amazon.load_amazon_2018(FIXTURES / "amazon2018")


def test_amazon2018_reviews(amazon18):
    assert amazon18.name == "amazon18-luxury_beauty"
    assert len(amazon18.interactions) == 8
    assert amazon18.dropped["duplicate review lines (identical user, item, time, text)"] == 1
    no_text = next(i for i in amazon18.interactions if i.user_id == "A2HOI48JK8838M" and i.item_id == "B00004U9V2")
    assert no_text.review == "OK"  # summary only: reviewText absent in the line
    emoji = next(i for i in amazon18.interactions if i.user_id == "A3CIUOJXQ5VDQ2" and i.item_id == "B00004U9V2")
    assert emoji.review == "Great gift Gift for mom, she loved it 😊"
    assert emoji.rating == 5.0 and emoji.timestamp == 1422921600


def test_amazon2018_meta(amazon18):
    items = amazon18.items
    assert set(items) == {"B00004U9V2", "B0000530HU", "B01AB2C3DE", "B07XYZ1234", "B07LIPSET1"}
    assert amazon18.dropped["duplicate metadata lines (same asin, first kept)"] == 1
    hand = items["B00004U9V2"]
    assert hand.title == "Crabtree & Evelyn - Gardener's Ultra-Moisturising Hand Therapy Pump - 250g/8.8 OZ"
    assert hand.brand == "Crabtree & Evelyn"
    assert hand.description == "Crabtree & Evelyn Gardener's Ultra-Moisturising Hand Therapy. Rich in shea butter Macadamia oil"
    assert hand.categories == ()
    assert hand.price == 30.0
    gel = items["B0000530HU"]
    assert gel.categories == ("Skin Care", "Face", "Moisturizers & Creams")
    assert gel.description == "A weightless gel-cream. Oil-free – non-comedogenic."
    assert gel.price is None  # "" in the source


def test_amazon2018_prices(amazon18):
    assert amazon18.items["B07XYZ1234"].price == 1299.0  # "$1,299.00"
    assert amazon18.items["B07LIPSET1"].price == 10.0  # "$10.00 - $20.00": the low end
    # the 2018 meta files sometimes carry scraped CSS in "price": not a price
    assert amazon18.items["B01AB2C3DE"].price is None
    assert amazon18.notes.get("prices not parseable, read as missing") == 1


def test_amazon2018_missing_title(amazon18):
    assert amazon18.items["B01AB2C3DE"].title == ""
    assert amazon18.notes["items with no title in metadata"] == 1


# --------------------------------------------------------------------------- Yelp


@pytest.fixture(scope="module")
def yelp_raw():
    return yelp.load_yelp(FIXTURES / "yelp")


def test_yelp_reviews(yelp_raw):
    assert len(yelp_raw.interactions) == 9
    assert yelp_raw.dropped == {"duplicate review_id lines": 1}
    first = yelp_raw.interactions[0]
    assert (first.user_id, first.item_id) == ("mh_-eMZ6K5RLWhZyISBhwA", "MTSW4McQd7CbVtyjqoe9mw")
    assert first.timestamp == _utc("2018-07-07 22:09:11") == 1531001351
    assert first.rating == 3.0
    crepes = next(i for i in yelp_raw.interactions if i.item_id == "CF33F8-E6oudUQ46HnavjQ" and i.user_id.startswith("mh_"))
    assert crepes.review == "Crêpes & café au lait ☕ parfaits."


def test_yelp_businesses(yelp_raw):
    items = yelp_raw.items
    assert len(items) == 5
    target = items["tUFrWirKiKi_TAnsVWINQQ"]
    assert target.title == "Target" and target.categories == ()  # "categories": null
    abby = items["Pns2l4eNsfO8kk83dixA6A"]
    assert abby.categories == ("Doctors", "Traditional Chinese Medicine", "Naturopathic/Holistic")
    assert dict(abby.extra) == {"location": "Santa Barbara, CA"}
    assert items["CF33F8-E6oudUQ46HnavjQ"].title == "Café Soleil & Crêperie"
    assert dict(items["CF33F8-E6oudUQ46HnavjQ"].extra) == {"location": "Montréal, QC"}


def test_yelp_prepare(yelp_raw):
    ds = prepare(yelp_raw, k=2)
    # Pns2... has a single review, so 8g_... drops to two events: too short for leave-one-out
    assert ds.users == ["OyoGAe7OKpv6SyGZT5g77Q", "mh_-eMZ6K5RLWhZyISBhwA"]
    assert sorted(ds.catalog.ids) == ["CF33F8-E6oudUQ46HnavjQ", "MTSW4McQd7CbVtyjqoe9mw", "tUFrWirKiKi_TAnsVWINQQ"]
    mh = ds.sequences[ds.users.index("mh_-eMZ6K5RLWhZyISBhwA")]
    assert [ds.catalog.at(r).item_id for r, _ in mh] == [
        "tUFrWirKiKi_TAnsVWINQQ",
        "MTSW4McQd7CbVtyjqoe9mw",
        "CF33F8-E6oudUQ46HnavjQ",
    ]


# --------------------------------------------------------------------------- MovieLens


def test_ml100k():
    raw = movielens.load_ml100k(FIXTURES / "ml-100k")
    assert raw.name == "ml-100k"
    assert len(raw.interactions) == 11
    assert raw.interactions[0].user_id == "196" and raw.interactions[0].item_id == "1"
    assert raw.interactions[0].rating == 3.0 and raw.interactions[0].timestamp == 881250949
    toy = raw.items["1"]
    assert (toy.title, toy.year, toy.categories) == ("Toy Story", 1995, ("Animation", "Children's", "Comedy"))
    assert raw.items["12"].title == "Usual Suspects, The"
    assert raw.items["12"].categories == ("Crime", "Thriller")
    assert raw.items["1191"].title == "Misérables, Les"  # latin-1 in the file
    unknown = raw.items["267"]
    assert (unknown.title, unknown.year, unknown.categories) == ("unknown", None, ("unknown",))


def test_ml1m():
    raw = movielens.load_ml1m(FIXTURES / "ml-1m")
    assert raw.name == "ml-1m"
    assert len(raw.interactions) == 10
    assert _pairs(raw)[0] == ("1", "1193", 978300760)
    assert raw.items["1193"].title == "One Flew Over the Cuckoo's Nest" and raw.items["1193"].year == 1975
    assert raw.items["73"].title == "Misérables, Les"
    assert raw.items["3863"].categories == ("Sci-Fi", "Thriller")
    assert raw.items["3863"].title == "Cell, The" and raw.items["3863"].year == 2000


def test_ml_latest_csv():
    raw = movielens.load_ml_latest(FIXTURES / "ml-latest")
    assert len(raw.interactions) == 9
    assert raw.interactions[1].rating == 3.5
    items = raw.items
    assert (items["11"].title, items["11"].year) == ("American President, The", 1995)
    assert items["40"].title == "Cry, the Beloved Country"
    assert items["750"].title == "Dr. Strangelove or: How I Learned to Stop Worrying and Love the Bomb"
    assert items["7502"].title == '"Great Performances" Cats' and items["7502"].year == 1998
    assert items["149532"].categories == ()  # "(no genres listed)"
    assert (items["171495"].title, items["171495"].year) == ("Cosmos", None)
    # a year range is not a release year: the title is kept whole
    assert (items["171749"].title, items["171749"].year) == ("Death Note: Desu nôto (2006–2007)", None)
    assert items["1"].categories == ("Adventure", "Animation", "Children", "Comedy", "Fantasy")


@pytest.mark.parametrize(
    "raw_title, expected",
    [
        ("Toy Story (1995)", ("Toy Story", 1995)),
        ("Shanghai Triad (Yao a yao yao dao waipo qiao) (1995)", ("Shanghai Triad (Yao a yao yao dao waipo qiao)", 1995)),
        ("Ready Player One (2018) ", ("Ready Player One", 2018)),
        ("1984 (1984)", ("1984", 1984)),
        ("Babylon 5", ("Babylon 5", None)),
        ("unknown", ("unknown", None)),
    ],
)
def test_split_title_year(raw_title, expected):
    assert movielens.split_title_year(raw_title) == expected


# --------------------------------------------------------------------------- RecBole atomic files


def test_recbole_atomic():
    raw = recbole.load_recbole(FIXTURES / "recbole" / "toy")
    assert raw.name == "toy"
    assert _pairs(raw) == [
        ("196", "242", 881250949),
        ("186", "302", 891717742),
        ("196", "302", 881250960),
        ("186", "242", 891717750),  # "891717750.0" in a float column
        ("22", "377", 878887116),
    ]
    assert raw.interactions[0].rating == 3.0
    kolya = raw.items["242"]
    assert (kolya.title, kolya.year, kolya.categories) == ("Kolya", 1996, ("Comedy",))
    assert raw.items["302"].categories == ("Crime", "Film-Noir", "Mystery", "Thriller")
    assert raw.items["377"].categories == ("Children's", "Comedy")
    assert raw.items["999"].year is None and raw.items["999"].categories == ()
    assert raw.notes == {"non-numeric release years read as missing": 1}


def test_recbole_without_item_file(tmp_path):
    shutil.copy(FIXTURES / "recbole" / "toy" / "toy.inter", tmp_path / "toy.inter")
    raw = recbole.load_recbole(tmp_path, name="toy")
    assert len(raw.interactions) == 5 and raw.items == {}
    ds = prepare(raw, k=1, min_sequence=2)
    assert ds.catalog["302"].title == ""  # kept; the id stands in for the title downstream


# --------------------------------------------------------------------------- registry


@pytest.mark.parametrize(
    "fmt, folder, n_items, n_interactions",
    [
        ("recbole", "recbole/toy", 4, 5),
        ("ml-100k", "ml-100k", 6, 11),
        ("ml-1m", "ml-1m", 5, 10),
        ("ml-latest", "ml-latest", 8, 9),
        ("amazon-2014", "amazon2014", 5, 11),
        ("amazon-2018", "amazon2018", 5, 8),
        ("yelp", "yelp", 5, 9),
    ],
)
def test_registry_dispatch(fmt, folder, n_items, n_interactions):
    raw = load_raw(fmt, FIXTURES / folder)
    assert (len(raw.items), len(raw.interactions)) == (n_items, n_interactions)


def test_registry_unknown_format():
    with pytest.raises(ValueError, match="unknown dataset format"):
        load_raw("netflix", Path("."))
    assert set(LOADERS) == {"recbole", "ml-100k", "ml-1m", "ml-latest", "amazon-2014", "amazon-2018", "yelp"}
