"""Routing plumbing: seed keys, bucket sizes, batching by option."""

from __future__ import annotations

import jax
import numpy as np

from hybrid_jax import routing
from hybrid_jax.data import option_batches


def test_bucket_sizes_bound_padding_and_shape_count():
    for cap in (1, 4, 16, 50, 256):
        sizes = {routing.bucket_size(n, cap) for n in range(1, cap + 1)}
        assert len(sizes) <= 2 * max(cap - 1, 1).bit_length() + 1
        for n in range(1, cap + 1):
            b = routing.bucket_size(n, cap)
            assert n <= b <= cap and (b - n) * 2 <= n
    assert [routing.bucket_size(n, 64) for n in (0, 1, 2, 3, 5, 7, 9, 13, 50)] == [0, 1, 2, 3, 6, 8, 12, 16, 64]


def test_option_batches_cover_every_row_once_within_its_option_at_bounded_shapes():
    """The one batching helper (routed pipeline, allocation, cost): every row once among the real rows, each batch
    one option's rows (padding repeats them), fixed batches of exactly b, else one bucket-sized batch per option
    rounded up to the mesh multiple."""
    choice = np.random.default_rng(0).integers(0, 3, 37)
    for batch_size, multiple in ((4, 1), (None, 1), (None, 4)):
        seen = []
        for k, rows, padded in option_batches(choice, batch_size, multiple):
            assert np.all(choice[padded] == k) and np.array_equal(padded[: len(rows)], rows)
            want = batch_size or -(-routing.bucket_size(len(rows), len(choice)) // multiple) * multiple
            assert len(padded) == want and len(padded) % multiple == 0
            seen += rows.tolist()
        assert sorted(seen) == list(range(len(choice)))
    assert [k for k, *_ in option_batches(np.array([2, 0, 2]), None)] == [0, 2]  # options in order, absent ones skipped


def test_seed_keys_depend_only_on_the_seed_and_differ_between_models():
    ka, kb = routing.seed_keys([5, 9, 11], base_seed=3)
    ka1, kb1 = routing.seed_keys([11], base_seed=3)
    data = jax.random.key_data
    assert np.array_equal(data(ka[2]), data(ka1[0])) and np.array_equal(data(kb[2]), data(kb1[0]))
    assert not np.array_equal(data(ka[0]), data(kb[0]))
    assert not np.array_equal(data(routing.seed_keys([5], base_seed=4)[0][0]), data(ka[0]))
