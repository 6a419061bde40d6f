"""How often a user's leave-one-out targets happen in the same second (issue #12).

MovieLens timestamps have one-second resolution, and many users rated several movies
within one second. :func:`training.data.preprocess.prepare` sorts each user's events
by timestamp with a stable sort, so events of the same second keep the order of the
source file; for such users, which event is the validation target and which the test
target is decided by that file order, not by time. RESULTS.md discloses the shares.

    python -m training.evaluation.ties ml-100k ml-1m
"""

from __future__ import annotations

import json
import sys

from training.data.preprocess import PreparedDataset


def same_second_shares(ds: PreparedDataset) -> dict[str, int | float | str]:
    """Counts and shares of users whose split targets share a timestamp.

    ``valid_test``: validation and test event in the same second (as events are sorted, the
    test event shares its second with an earlier event exactly then); ``last_three``: the
    training target (the teacher's oracle target), validation and test events all in one second.
    """
    counts = {"valid_test": 0, "last_three": 0}
    for seq in ds.sequences:
        test_ts = seq[-1][1]
        counts["valid_test"] += seq[-2][1] == test_ts
        counts["last_three"] += len(seq) >= 3 and seq[-3][1] == seq[-2][1] == test_ts
    out: dict[str, int | float | str] = {"dataset": ds.name, "split_hash": ds.split_hash[:12], "users": ds.n_users}
    for key, n in counts.items():
        out[f"{key}_users"] = int(n)
        out[f"{key}_share"] = round(n / ds.n_users, 4) if ds.n_users else float("nan")
    return out


def main(argv: list[str] | None = None) -> None:
    """Print the shares of each named dataset as one JSON line."""
    from training.data.registry import load_dataset

    for name in argv if argv is not None else sys.argv[1:] or ["ml-100k", "ml-1m"]:
        print(json.dumps(same_second_shares(load_dataset(name))))


if __name__ == "__main__":
    main()
