"""R2END-Hybrid bundles: exported from a (tiny) HybridModel, served as training scored them, live items in the new-item form.

The text path is the tiny R2END of the service tests (fixture movies, no teacher data); SASRec is a
random tiny net (hidden 8, max_len 10): parity needs no trained model. Two items are held out of
SASRec, so the bundle has 'new' rows from the start, as under the cold-start protocol.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import shutil
from pathlib import Path

import numpy as np
import pytest
from service_util import FIXTURE, WRITE_AUTH, ServiceProcess

from index import bundle as B
from index.catalog import ItemMeta
from index.hybrid import apply_map, user_vectors
from index.verbalize import HistoryEvent, item_document

HELD_OUT = (1, 4)
MAX_LEN = 10


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    import torch

    from training.data.preprocess import prepare
    from training.data.recbole import load_recbole
    from training.export import export_bundle
    from training.models.sasrec import SASRecConfig, SASRecNet
    from training.r2end.config import R2ENDConfig
    from training.r2end.hybrid import HybridConfig, HybridModel, fit_parts
    from training.r2end.pipeline import train_r2end

    ds = prepare(load_recbole(FIXTURE, "movies"), k=2)
    config = R2ENDConfig(item_text="metadata", rationale="item", projection_epochs=2, threads=2, variant="tiny-hybrid", hybrid={})
    base = train_r2end(config, ds)
    torch.manual_seed(0)
    net = SASRecNet(ds.n_items, SASRecConfig(hidden=8, layers=1, heads=2, max_len=MAX_LEN)).eval()
    trained_rows = np.ones(ds.n_items, dtype=bool)
    trained_rows[list(HELD_OUT)] = False
    text_items = base.item_vectors.astype(np.float32)
    parts = fit_parts(net.items.weight[1:].detach().numpy(), text_items, trained_rows, 1.0)
    model = HybridModel(base, net, HybridConfig(), trained_rows, text_items, *parts, weight=0.5, bias=1.0, name="tiny-hybrid")
    model.text_scale = 2.0  # c != 1, so the bundle must carry it for served new items to match training's
    bundle = tmp_path_factory.mktemp("hybrid") / "bundle"
    manifest = export_bundle(base, ds, bundle, int8=False, hybrid=model)
    return ds, model, bundle, manifest


@pytest.fixture(scope="module")
def serving(trained):
    from service.model import ServingModel
    from service.settings import ServiceSettings

    _, _, bundle, _ = trained
    return ServingModel.load(bundle, ServiceSettings(bundle_path=bundle, warmup=False))


def _histories(ds) -> list[list[tuple[int, int]]]:
    """Every user's test history, plus a long one that holds a held-out item (SASRec reads the last MAX_LEN trained rows)."""
    histories = [ds.example(u, "test")[0] for u in range(ds.n_users)]
    long = [(row, 1_000_000_000 + 86_400 * row) for row in range(ds.n_items)]
    return [*histories, long]


def _served_users(serving, ds, histories) -> np.ndarray:
    lookup = {item.item_id: item for item in ds.catalog}
    texts = [serving.history_text([HistoryEvent(ds.catalog.at(r).item_id, t) for r, t in h], lookup) for h in histories]
    return serving.add_history(serving.user_encoder.encode(texts), [[r for r, _ in h] for h in histories])


def test_export_writes_the_hybrid_section_and_onnx_matches_torch(trained):
    _, model, bundle, manifest = trained
    assert manifest.hybrid == B.HybridSpec(max_len=MAX_LEN, sasrec_dim=8, weight=0.5, bias=1.0, text_scale=2.0)
    assert manifest.output_dim == model.text_items.shape[1] and manifest.index_dim == 8 + manifest.output_dim + 1
    assert {B.SASREC_ONNX, B.HYBRID_ARRAYS} <= set(manifest.files)
    parity = manifest.metrics["onnx_parity"]
    assert parity["sasrec_max_abs_diff"] < 1e-4 and parity["hybrid_user_max_abs_diff"] < 1e-4
    vectors = np.load(bundle / B.ITEM_VECTORS)
    np.testing.assert_allclose(vectors, model.item_vectors, atol=1e-6)
    assert (vectors[:, -1] == 1).sum() == len(HELD_OUT) and (vectors[list(HELD_OUT), -1] == 1).all()


def test_the_served_user_vector_is_the_trained_one(trained, serving):
    ds, model, _, _ = trained
    histories = _histories(ds)
    hidden, text = model.users(ds, histories)
    expected = user_vectors(hidden, text, model.cov_cf, model.cov_text, model.weight, model.bias)
    served = _served_users(serving, ds, histories)
    assert np.abs(served - expected).max() < 1e-4
    assert (
        np.abs(served @ np.load(trained[2] / B.ITEM_VECTORS).T - model.score(ds, range(len(histories)), histories)).max() < 1e-4
    )
    text_only = expected.copy()
    text_only[:, :8] = 0.0
    assert np.abs(served - text_only).max() > 1e-2, "SASRec's part must matter"


def test_sasrec_reads_the_last_max_len_trained_items(trained, serving):
    ds, _, _, _ = trained
    rows = list(range(ds.n_items))  # rows 1 and 4 are held out
    assert serving.hybrid is not None and serving.hybrid.positions(rows) == [p for p in rows if p not in HELD_OUT][-MAX_LEN:]
    events = [HistoryEvent(ds.catalog.at(r).item_id, 1_000_000_000 + 86_400 * r) for r in rows]
    assert serving.events_read(events, rows) == MAX_LEN  # more than the verbaliser's 8
    short = [0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11]  # the last 10 trained rows start at position 0: every event counts
    assert serving.events_read(events[:12], short) == 12


def test_a_live_item_gets_the_new_item_form_and_a_replaced_one_keeps_its_sasrec_row(trained, serving):
    ds, model, _, _ = trained
    new = ItemMeta(item_id="hybrid-new", title="A brand new film", categories=("Drama",), description="a new drama")
    replaced = dataclasses.replace(ds.catalog.at(0), description="a new description of an old film")
    vectors = serving.embed_items([new, replaced])
    text = serving.item_encoder.encode([item_document(item.description, item) for item in (new, replaced)])
    np.testing.assert_allclose(
        vectors[0], np.concatenate([apply_map(model.mapping, text[:1])[0], 2.0 * text[0], [1.0]]), atol=1e-5
    )
    np.testing.assert_allclose(vectors[1], np.concatenate([model.sasrec_items[0], text[1], [0.0]]), atol=1e-5)
    assert serving.events_read([HistoryEvent("x", 1)], [ds.n_items + 3]) == 1  # a live row: shown in the text, not read by SASRec
    assert serving.hybrid.positions([ds.n_items + 3]) == []


def test_the_service_recommends_with_the_hybrid_bundle_and_ranks_a_live_item(trained, serving, tmp_path):
    ds, _, bundle, manifest = trained
    history = [{"item_id": ds.catalog.at(r).item_id, "timestamp": 1_000_000_000 + 86_400 * r} for r in (0, 2, 3, 5)]
    new = {"title": "A brand new film", "categories": ["Drama"], "description": "a new drama"}
    with ServiceProcess(bundle, tmp_path / "server") as server, server.client(timeout=120) as http:
        first = http.post("/recommend", json={"history": history, "k": 5})
        assert first.status_code == 200, first.text
        assert first.json()["variant"] == manifest.variant and len(first.json()["items"]) == 5
        assert first.json()["history_used"] == 4
        put = http.put("/items/hybrid-new", json=new, headers=WRITE_AUTH)
        assert put.status_code in (200, 201), put.text
        everything = http.post("/recommend", json={"history": history, "k": ds.n_items + 1}).json()["items"]
    served = {item["item_id"]: item["score"] for item in everything}
    assert "hybrid-new" in served and len(served) == ds.n_items + 1 - len(history)
    rows = [ds.catalog.row(h["item_id"]) for h in history]
    lookup = {item.item_id: item for item in ds.catalog}
    text = serving.history_text([HistoryEvent(h["item_id"], h["timestamp"]) for h in history], lookup)
    user = serving.add_history(serving.user_encoder.encode([text]), [rows])[0]
    item = serving.embed_items([ItemMeta(item_id="hybrid-new", **{**new, "categories": tuple(new["categories"])})])[0]
    assert served["hybrid-new"] == pytest.approx(float(user @ item), abs=1e-4)  # the inner product, not a cosine
    assert max(served.values()) > 1.0 or min(served.values()) < -1.0 or abs(float(np.linalg.norm(user)) - 1.0) > 1e-3


def test_a_request_new_item_bias_moves_new_items_only(trained, serving):
    """b is the user vector's last coordinate (new items' flag): replacing it per user leaves every other coordinate."""
    ds, _, _, manifest = trained
    histories = _histories(ds)[:3]
    lookup = {item.item_id: item for item in ds.catalog}
    texts = [serving.history_text([HistoryEvent(ds.catalog.at(r).item_id, t) for r, t in h], lookup) for h in histories]
    text, rows = serving.user_encoder.encode(texts), [[r for r, _ in h] for h in histories]
    default = serving.add_history(text, rows)
    np.testing.assert_array_equal(serving.add_history(text, rows, [None, None, None]), default)
    chosen = serving.add_history(text, rows, [3.0, None, -2.0])
    np.testing.assert_array_equal(chosen[:, :-1], default[:, :-1])
    spread = default[:, -1] / manifest.hybrid.bias  # b sd(h_u) with the bundle's b (1.0 in this fixture)
    np.testing.assert_allclose(chosen[:, -1], [3.0 * spread[0], default[1, -1], -2.0 * spread[2]], rtol=1e-6)
    assert (spread > 0).all()


def test_the_service_takes_a_new_item_bias_per_request(trained, tmp_path):
    ds, _, bundle, manifest = trained
    history = [{"item_id": ds.catalog.at(r).item_id, "timestamp": 1_000_000_000 + 86_400 * r} for r in (0, 2, 3, 5)]
    new_ids = {ds.catalog.at(r).item_id for r in HELD_OUT} | {"hybrid-new"}
    every = ds.n_items + 1 - len(history)
    with ServiceProcess(bundle, tmp_path / "server") as server, server.client(timeout=120) as http:
        assert http.get("/readyz").json()["bundle"]["new_item_bias"] == manifest.hybrid.bias
        put = http.put("/items/hybrid-new", json={"title": "A brand new film", "categories": ["Drama"]}, headers=WRITE_AUTH)
        assert put.status_code in (200, 201), put.text

        def ranked(**extra) -> list[dict]:
            answer = http.post("/recommend", json={"history": history, "k": every, "include_metadata": False, **extra})
            assert answer.status_code == 200, answer.text
            return answer.json()["items"]

        default, same = ranked(), ranked(new_item_bias=manifest.hybrid.bias)
        high, low = ranked(new_item_bias=10.0), ranked(new_item_bias=-10.0)
        batch = http.post(
            "/recommend/batch",
            json={"requests": [{"history": history, "k": every, "include_metadata": False, "new_item_bias": 10.0}]},
        )
    assert same == default
    assert {item["item_id"] for item in high[: len(new_ids)]} == new_ids  # lifted far enough: every new item first
    assert batch.status_code == 200 and batch.json()["results"][0]["items"] == high
    scores = [{item["item_id"]: item["score"] for item in answer} for answer in (default, high, low)]
    for answer in scores[1:]:  # seen items keep their scores
        assert {i: s for i, s in answer.items() if i not in new_ids} == pytest.approx(
            {i: s for i, s in scores[0].items() if i not in new_ids}, abs=1e-4
        )
    b = manifest.hybrid.bias  # every new item moves by (b' - b) sd(h_u): the same shift for each, in proportion to b' - b
    up = {i: scores[1][i] - scores[0][i] for i in new_ids}
    down = {i: scores[2][i] - scores[0][i] for i in new_ids}
    spread = up["hybrid-new"] / (10.0 - b)
    assert spread > 0
    assert up == pytest.approx(dict.fromkeys(new_ids, (10.0 - b) * spread), rel=1e-4)
    assert down == pytest.approx(dict.fromkeys(new_ids, (-10.0 - b) * spread), rel=1e-4)


def _rewrite(bundle: Path, name: str, write) -> None:
    """Replace one bundle file and its checksum (so that only the check under test can refuse it)."""
    write(bundle / name)
    manifest = json.loads((bundle / B.MANIFEST).read_text())
    manifest["files"][name] = hashlib.sha256((bundle / name).read_bytes()).hexdigest()
    (bundle / B.MANIFEST).write_text(json.dumps(manifest))


def _arrays(bundle: Path) -> dict[str, np.ndarray]:
    with np.load(bundle / B.HYBRID_ARRAYS) as data:
        return {name: data[name] for name in data.files}


def test_load_refuses_inconsistent_hybrid_bundles(trained, tmp_path):
    from service.model import ServingModel
    from service.settings import ServiceSettings

    _, _, bundle, _ = trained

    def wrong_mapping(path: Path) -> None:
        arrays = _arrays(bundle)
        np.savez(path, **{**arrays, "mapping": arrays["mapping"][:-1]})

    def wrong_mask(path: Path) -> None:
        arrays = _arrays(bundle)
        np.savez(path, **{**arrays, "trained": np.ones_like(arrays["trained"])})

    def wrong_len(path: Path) -> None:
        manifest = json.loads(path.read_text())
        manifest["hybrid"]["max_len"] = MAX_LEN + 1
        path.write_text(json.dumps(manifest))

    cases = [
        (B.HYBRID_ARRAYS, wrong_mapping, "hybrid_arrays.npz: mapping is float32"),
        (B.HYBRID_ARRAYS, wrong_mask, "hybrid_arrays.npz: trained mask does not match"),
        (B.MANIFEST, wrong_len, "sasrec.onnx: inputs"),
    ]
    for n, (name, write, message) in enumerate(cases):
        broken = tmp_path / f"broken{n}"
        shutil.copytree(bundle, broken)
        if name == B.MANIFEST:
            write(broken / name)
        else:
            _rewrite(broken, name, write)
        with pytest.raises(B.BundleError, match=message):
            ServingModel.load(broken, ServiceSettings(bundle_path=broken, warmup=False))
    unhybrid = tmp_path / "unhybrid"
    shutil.copytree(bundle, unhybrid)
    manifest = json.loads((unhybrid / B.MANIFEST).read_text())
    manifest["hybrid"] = None
    (unhybrid / B.MANIFEST).write_text(json.dumps(manifest))
    with pytest.raises(B.BundleError, match="item_vectors.npy: shape"):  # a reader that ignores the section refuses the bundle
        B.load_manifest(unhybrid)


def test_a_gated_bundle_serves_each_user_its_history_length_buckets_weight(trained, tmp_path):
    """A history-length gate in the manifest: the service weighs each user's text by its bucket, as training scores."""
    from service.model import ServingModel
    from service.settings import ServiceSettings

    ds, model, bundle, _ = trained
    histories = _histories(ds)
    lengths = np.array([len(h) for h in histories])
    edge = float(np.sort(lengths)[len(lengths) // 2 - 1])
    short, long = np.flatnonzero(lengths <= edge), np.flatnonzero(lengths > edge)
    assert len(short) and len(long)
    gated = dataclasses.replace(model, length_edges=(edge,), length_weights=(0.0, 2.0))
    copy = tmp_path / "gated"
    shutil.copytree(bundle, copy)
    manifest = json.loads((copy / B.MANIFEST).read_text())
    manifest["hybrid"].update(length_edges=[edge], length_weights=[0.0, 2.0])
    manifest["schema_version"] = 2  # what write_manifest gives a gated bundle (older readers refuse it)
    (copy / B.MANIFEST).write_text(json.dumps(manifest))
    serving = ServingModel.load(copy, ServiceSettings(bundle_path=copy, warmup=False))
    hidden, text = gated.users(ds, histories)
    expected = user_vectors(hidden, text, gated.cov_cf, gated.cov_text, gated.weights(histories), gated.bias)
    served = _served_users(serving, ds, histories)
    assert np.abs(served - expected).max() < 1e-4
    text_part = served[:, 8 : 8 + text.shape[1]]
    assert (text_part[short] == 0).all()  # w = 0: SASRec alone
    assert (np.linalg.norm(text_part[long], axis=1) > 1e-3).all()
    assert np.abs(served @ np.load(copy / B.ITEM_VECTORS).T - gated.score(ds, range(len(histories)), histories)).max() < 1e-4
