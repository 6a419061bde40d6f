"""R2END-Hybrid's new-item text weight c: only new rows' text part is scaled."""

from __future__ import annotations

import numpy as np

from index.hybrid import apply_map, item_vectors


def test_text_scale_multiplies_only_the_text_part_of_new_items():
    rng = np.random.default_rng(5)
    sasrec, text = rng.normal(size=(6, 3)).astype(np.float32), rng.normal(size=(6, 4)).astype(np.float32)
    mapping = rng.normal(size=(5, 3)).astype(np.float32)
    new = np.array([False, True, False, False, True, False])
    plain, scaled = item_vectors(sasrec, text, new, mapping), item_vectors(sasrec, text, new, mapping, text_scale=3.0)
    np.testing.assert_array_equal(scaled[~new], plain[~new])  # warm items untouched
    np.testing.assert_allclose(scaled[new, 3:7], 3.0 * text[new], rtol=1e-6)
    np.testing.assert_allclose(scaled[new, :3], apply_map(mapping, text[new]), rtol=1e-5)  # the mapped guess is not scaled
    assert (scaled[new, 7] == 1.0).all() and (scaled[~new, 7] == 0.0).all()
