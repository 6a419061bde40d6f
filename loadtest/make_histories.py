"""Write the load generator's traffic data: test-user histories of a dataset as a small JSON file.

    python loadtest/make_histories.py --dataset ml-100k --out $R2END_HOME/loadtest/histories.json
    python loadtest/make_histories.py --dataset mydata    # a dataset added with `r2end data add mydata ...`
    python loadtest/make_histories.py --format recbole --path tests/fixtures/recbole/movies --k 2 --out h.json

Each history is the test example's history (``ds.example(u, "test")[0]``: every event but the
last), oldest first, as ``[item_id, unix_timestamp]`` pairs. The Locust file reads this file, so
the load generator needs neither torch nor the dataset.
"""

from __future__ import annotations

import argparse
import random
import sys
from pathlib import Path

if __package__ in (None, ""):  # run as a script: make the repo importable
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from loadtest.traffic import DEFAULT_HISTORIES, TrafficData

DEFAULT_MAX_USERS = 1000


def collect(ds, max_users: int = DEFAULT_MAX_USERS, seed: int = 0) -> TrafficData:
    """Test histories of up to ``max_users`` users (a seeded sample), the catalogue ids and categories.

    ``ds`` is a :class:`training.data.preprocess.PreparedDataset`.
    """
    users = list(range(ds.n_users))
    if len(users) > max_users:
        users = sorted(random.Random(seed).sample(users, max_users))
    histories = []
    for u in users:
        history, _target = ds.example(u, "test")
        if history:
            histories.append([(ds.catalog.at(row).item_id, int(ts)) for row, ts in history])
    categories = sorted({c for item in ds.catalog for c in item.categories})
    return TrafficData(dataset=ds.name, histories=histories, item_ids=ds.catalog.ids, categories=categories)


def load(dataset: str | None, fmt: str | None, path: Path | None, k: int | None = None):
    """The prepared dataset, exactly as training prepares it (same k-core, same split)."""
    from training.data.registry import load_dataset

    return load_dataset(dataset, fmt=fmt, path=path, k=k)


def dataset_histories(dataset: str, path: Path, k: int | None = None) -> Path:
    """Write the test histories of a named dataset (as training prepares it) to ``path``; the benchmarks' default traffic."""
    collect(load(dataset, None, None, k)).save(path)
    return path


def main(argv: list[str] | None = None) -> Path:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--dataset", help="named dataset (ml-100k, ml-1m) or one added with `r2end data add`")
    parser.add_argument("--format", dest="fmt", help="dataset format with --path (e.g. recbole)")
    parser.add_argument("--path", type=Path, help="dataset folder for --format")
    parser.add_argument(
        "--k",
        type=int,
        default=None,
        help="k-core, as in training (default: an added dataset's own, else 5; the tiny test bundle uses 2)",
    )
    parser.add_argument("--max-users", type=int, default=DEFAULT_MAX_USERS, help="sample at most this many test users")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", type=Path, default=DEFAULT_HISTORIES)
    args = parser.parse_args(argv)
    if not args.dataset and not args.fmt:
        parser.error("give --dataset or --format and --path")
    data = collect(load(args.dataset, args.fmt, args.path, args.k), args.max_users, args.seed)
    data.save(args.out)
    lengths = sorted(len(h) for h in data.histories)
    print(
        f"{args.out}: {len(lengths)} histories of {data.dataset} (length median {lengths[len(lengths) // 2]}, "
        f"max {lengths[-1]}), {len(data.item_ids)} items",
        file=sys.stderr,
    )
    return args.out


if __name__ == "__main__":
    main()
