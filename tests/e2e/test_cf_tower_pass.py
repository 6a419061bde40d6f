"""The sequence tower's per-user pass reads each training prefix off exactly the right causal state."""

from __future__ import annotations

import numpy as np
import pytest

from index.catalog import Catalog, ItemMeta
from training.data.preprocess import PreparedDataset

torch = pytest.importorskip("torch")


def _dataset() -> PreparedDataset:
    rng = np.random.default_rng(5)
    items = [ItemMeta(item_id=f"i{n}", title=f"Film {n}") for n in range(40)]
    lengths = [2, 3, 9, 16, 30]  # short, shorter than the prefixes taken, and longer than max_len
    sequences = [[(int(r), t) for t, r in enumerate(rng.integers(0, 40, n))] for n in lengths]
    return PreparedDataset("toy", Catalog(items), [f"u{u}" for u in range(len(lengths))], sequences)


def _tower(max_len: int):
    from training.models.sasrec import SASRecConfig, SASRecNet
    from training.r2end.collaborative import SequenceTower

    torch.manual_seed(0)
    tower = SequenceTower(SASRecNet(40, SASRecConfig(hidden=16, max_len=max_len)), 8)
    torch.nn.init.normal_(tower.out.weight)
    return tower.eval()


@pytest.mark.parametrize("cold_share", [0.0, 0.5])
def test_every_example_points_at_its_last_known_item_and_sees_only_its_history(cold_share):
    from training.r2end.collaborative import training_examples, user_pass

    ds, max_len = _dataset(), 12
    known = np.random.default_rng(1).random(ds.n_items) >= cold_share
    examples = training_examples(ds, per_user=10)
    plan = user_pass(examples, ds.n_users, known, max_len)
    padding_row = ds.n_users
    assert plan.sequences.shape == (ds.n_users + 1, max_len) and not plan.sequences[padding_row].any()
    assert sorted(torch.cat(plan.examples_of).tolist()) == list(range(len(examples)))
    for i, (u, history, _) in enumerate(examples):
        held = [row for row, _ in history if known[row]]
        row, column = int(plan.row[i]), int(plan.column[i])
        assert i in plan.examples_of[u].tolist()
        if not held:
            assert row == padding_row
            continue
        assert row == u
        seen = [int(x) - 1 for x in plan.sequences[row, : column + 1] if x]
        assert seen == held[-len(seen) :] and len(seen) == min(len(held), column + 1), f"example {i}"
        assert seen[-1] == held[-1]


def test_the_state_read_for_a_prefix_ignores_the_items_after_it():
    """Causality: changing the later items of the user's row leaves a prefix's tower output unchanged."""
    from training.r2end.collaborative import training_examples, user_pass

    ds, max_len = _dataset(), 12
    examples = training_examples(ds, per_user=10)
    plan = user_pass(examples, ds.n_users, np.ones(ds.n_items, bool), max_len)
    tower = _tower(max_len)
    at = (plan.row, plan.column)
    with torch.no_grad():
        before = tower(plan.sequences, at)
        changed = plan.sequences.clone()
        for i in range(len(examples)):
            row, column = int(plan.row[i]), int(plan.column[i])
            if column + 1 < max_len:
                changed[row, column + 1 :] = (changed[row, column + 1 :] % 40) + 1  # other real items
                after = tower(changed, at)
                assert torch.allclose(before[i], after[i], atol=1e-5), f"example {i} saw a later item"
                changed[row] = plan.sequences[row]
        assert torch.allclose(
            tower(plan.sequences),
            tower(plan.sequences, (torch.arange(len(plan.sequences)), torch.full((len(plan.sequences),), max_len - 1))),
        )


def test_a_window_shorter_than_the_prefixes_is_refused():
    from training.r2end.collaborative import training_examples, user_pass

    ds = _dataset()
    with pytest.raises(ValueError, match="max_len"):
        user_pass(training_examples(ds, per_user=10), ds.n_users, np.ones(ds.n_items, bool), max_len=4)


@pytest.mark.parametrize("tower_pass", ["per-user", "per-prefix"])
def test_batches_cover_every_example_once_per_epoch(tower_pass):
    from training.r2end.collaborative import CFConfig, _batches, training_examples, user_pass

    ds = _dataset()
    examples = training_examples(ds, per_user=10)
    config = CFConfig(design="sequence-tower", batch_size=20, prefixes_per_user=10, tower_pass=tower_pass)
    plan = user_pass(examples, ds.n_users, np.ones(ds.n_items, bool), 12) if tower_pass == "per-user" else None
    sequences = None if plan else torch.zeros((len(examples), 12), dtype=torch.long)
    seen = []
    for idx, tower_input, at in _batches(len(examples), sequences, plan, config, torch.Generator().manual_seed(0)):
        seen += idx.tolist()
        if plan is None:
            assert at is None and len(tower_input) == len(idx)
        else:  # the tower input holds the batch's users only, and every example's row is among them
            assert len(tower_input) <= 2 + 1 and bool((at[0] >= 0).all())
            for i, position in zip(idx.tolist(), at[0].tolist(), strict=True):
                assert torch.equal(tower_input[position], plan.sequences[plan.row[i]])
    assert sorted(seen) == list(range(len(examples)))
