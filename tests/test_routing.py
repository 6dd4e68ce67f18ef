"""Routing plumbing: seed keys, bucket sizes."""

from __future__ import annotations

import jax
import numpy as np

from hybrid_jax import routing


def test_bucket_sizes_bound_padding_and_shape_count():
    for cap in (1, 4, 16, 50, 256):
        sizes = {routing.bucket_size(n, cap) for n in range(1, cap + 1)}
        assert len(sizes) <= routing.NUM_BUCKETS + 1
        for n in range(1, cap + 1):
            b = routing.bucket_size(n, cap)
            assert n <= b <= cap and b - n < -(-cap // routing.NUM_BUCKETS)
    assert routing.bucket_size(0, 16) == 0


def test_seed_keys_depend_only_on_the_seed_and_differ_between_models():
    ka, kb = routing.seed_keys([5, 9, 11], base_seed=3)
    ka1, kb1 = routing.seed_keys([11], base_seed=3)
    data = jax.random.key_data
    assert np.array_equal(data(ka[2]), data(ka1[0])) and np.array_equal(data(kb[2]), data(kb1[0]))
    assert not np.array_equal(data(ka[0]), data(kb[0]))
    assert not np.array_equal(data(routing.seed_keys([5], base_seed=4)[0][0]), data(ka[0]))
