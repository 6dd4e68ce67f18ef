"""Routing plumbing: seed keys, bucket sizes."""

from __future__ import annotations

import jax
import numpy as np

from hybrid_jax import routing


def test_bucket_sizes_bound_padding_and_shape_count():
    for cap in (1, 4, 16, 50, 256):
        sizes = {routing.bucket_size(n, cap) for n in range(1, cap + 1)}
        assert len(sizes) <= 2 * max(cap - 1, 1).bit_length() + 1
        for n in range(1, cap + 1):
            b = routing.bucket_size(n, cap)
            assert n <= b <= cap and (b - n) * 2 <= n
    assert [routing.bucket_size(n, 64) for n in (0, 1, 2, 3, 5, 7, 9, 13, 50)] == [0, 1, 2, 3, 6, 8, 12, 16, 64]


def test_seed_keys_depend_only_on_the_seed_and_differ_between_models():
    ka, kb = routing.seed_keys([5, 9, 11], base_seed=3)
    ka1, kb1 = routing.seed_keys([11], base_seed=3)
    data = jax.random.key_data
    assert np.array_equal(data(ka[2]), data(ka1[0])) and np.array_equal(data(kb[2]), data(kb1[0]))
    assert not np.array_equal(data(ka[0]), data(kb[0]))
    assert not np.array_equal(data(routing.seed_keys([5], base_seed=4)[0][0]), data(ka[0]))
