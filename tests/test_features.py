"""Router features: known values on hand-built inputs, finiteness and determinism on real prefixes."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from hybrid_jax import routing
from hybrid_jax.config import Geometry
from hybrid_jax.geometry import visible_mask
from hybrid_jax.probe import features

K = 12
GEOMETRY = Geometry()  # the brief's: 8x8 patches of 32x32 images


def _image_feats(image: np.ndarray) -> dict[str, float]:
    mask = jnp.asarray(visible_mask(K, GEOMETRY))
    vals = features.image_level(jnp.asarray(image)[None] * mask, mask)
    return {n: float(v[0]) for n, v in zip(features.IMAGE_LEVEL, vals)}


def test_visible_mask_covers_the_first_k_patches_in_raster_order():
    m = visible_mask(6, GEOMETRY)[..., 0]
    assert m[:8].all() and m[8:16, :16].all() and not m[8:16, 16:].any() and not m[16:].any()
    big = visible_mask(10, Geometry(image_size=64))[..., 0]  # 8 patches per row at 64x64
    assert big[:8].all() and big[8:16, :16].all() and not big[8:16, 16:].any() and not big[16:].any()


def test_constant_image_has_zero_std_range_and_edges():
    f = _image_feats(np.full((32, 32, 3), 0.4, np.float32))
    assert f["pixel_std"] == pytest.approx(0, abs=1e-4)  # sqrt of an f32 rounding-level variance
    assert f["dynamic_range"] == pytest.approx(0, abs=1e-6)
    assert f["edge_energy"] == pytest.approx(0, abs=1e-6)
    assert f["colorfulness"] == pytest.approx(0, abs=1e-6)


def test_mirrored_image_has_zero_symmetry_error_and_a_random_one_does_not():
    half = np.random.default_rng(0).uniform(-1, 1, (32, 16, 3)).astype(np.float32)
    assert _image_feats(np.concatenate([half, half[:, ::-1]], 1))["symmetry_error"] == pytest.approx(0, abs=1e-7)
    assert _image_feats(np.random.default_rng(1).uniform(-1, 1, (32, 32, 3)).astype(np.float32))["symmetry_error"] > 0.1


def test_clip_fraction_and_dynamic_range_of_a_two_level_image():
    img = np.full((32, 32, 3), -1.0, np.float32)
    img[:, :16] = 0.0
    f = _image_feats(img)
    assert f["clip_fraction"] == pytest.approx(0.5) and f["dynamic_range"] == pytest.approx(1.0)


def test_attention_entropy_is_one_for_uniform_and_zero_for_one_hot_attention():
    steps, layers, b, heads = K, 2, 3, 4
    vis = (np.arange(16)[None] <= np.arange(steps)[:, None]).astype(np.float32)  # [k, 16]
    uniform = np.broadcast_to((vis / vis.sum(1, keepdims=True))[:, None, None, None], (steps, layers, b, heads, 16))
    assert np.allclose(features.attention_entropy(jnp.asarray(uniform)), 1.0, atol=1e-6)
    one_hot = np.zeros((steps, layers, b, heads, 16), np.float32)
    one_hot[..., 0] = 1.0
    assert np.allclose(features.attention_entropy(jnp.asarray(one_hot)), 0.0, atol=1e-6)
    assert np.allclose(features.per_layer(jnp.asarray(one_hot)), 1.0)


def test_query_entropy_normalises_by_the_keys_each_query_sees_and_counts_only_the_chosen_queries():
    """One head, four queries over four keys: uniform over 4 (1.0), 0.9/0.1 over 2 (the binary entropy over log 2),
    one key only (undefined: not counted), uniform over 3 but not chosen; layers add up; `entropy_mean` over two
    steps."""
    w = np.zeros((1, 1, 4, 4), np.float32)
    w[0, 0, 0], w[0, 0, 1, :2], w[0, 0, 2, 3], w[0, 0, 3, :3] = 0.25, [0.9, 0.1], 1.0, 1 / 3
    total, count = features.query_entropy([jnp.asarray(w)], jnp.asarray([[True, True, True, False]]))
    binary = -(0.9 * np.log(0.9) + 0.1 * np.log(0.1)) / np.log(2)
    np.testing.assert_allclose(total, [1.0 + binary], rtol=1e-6)
    np.testing.assert_array_equal(count, [2.0])
    two = features.query_entropy([jnp.asarray(w)] * 2, jnp.asarray([[True, True, True, False]]))
    np.testing.assert_allclose(two, (2 * total, 2 * count), rtol=1e-6)  # layers add up
    stacked = jnp.stack([total, total * 0]), jnp.stack([count, count])  # two steps
    np.testing.assert_allclose(features.entropy_mean(*stacked), [(1.0 + binary) / 4], rtol=1e-6)
    np.testing.assert_array_equal(features.entropy_mean(jnp.zeros((2, 3)), jnp.zeros((2, 3))), 0.0)


def test_step_mse_and_self_consistency_on_known_sequences():
    samples = jnp.asarray(np.arange(4, dtype=np.float32)[None, :, None] * np.ones((1, 4, 192), np.float32))
    assert np.allclose(features.step_mse(samples), 1.0)
    means = jnp.zeros((4, 1, 192))
    assert np.allclose(features.self_consistency(means, jnp.zeros((1, 4, 192))), 0.0)
    assert np.allclose(features.self_consistency(means, jnp.full((1, 4, 192), 2.0)), 4.0)


def test_smooth_image_has_high_autocorrelation_and_low_high_frequency_energy():
    y, x = np.mgrid[0:32, 0:32] / 31.0
    smooth = np.repeat((x + y - 1)[..., None], 3, -1).astype(np.float32)
    noise = np.random.default_rng(0).uniform(-1, 1, (32, 32, 3)).astype(np.float32)
    mask = jnp.asarray(visible_mask(K, GEOMETRY))
    ac = features.autocorrelation(jnp.asarray(np.stack([smooth, noise])) * mask, mask)
    hf = features.high_frequency_energy(jnp.asarray(np.stack([smooth, noise])) * mask, mask)
    assert ac[0] > 0.95 and abs(float(ac[1])) < 0.1
    assert hf[0] < 0.1 < hf[1]


def test_features_are_finite_deterministic_and_named(preset, model_b_params, model_b_sampler):
    keys_b = routing.seed_keys([3, 5, 7], preset.seeds.base_seed)[1]
    compute = jax.jit(lambda prefix: features.compute(prefix, preset.geometry))
    f1 = np.asarray(compute(model_b_sampler.ar_prefix(model_b_params, keys_b, K)))
    f2 = np.asarray(compute(model_b_sampler.ar_prefix(model_b_params, keys_b, K)))
    names = features.feature_names(preset.model_b.decoder.num_layers)
    assert f1.shape == (3, len(names)) == (3, 18 + preset.model_b.decoder.num_layers)
    assert np.isfinite(f1).all() and np.array_equal(f1, f2)
    assert len(set(names)) == len(names) == 24 - 6 + preset.model_b.decoder.num_layers
    assert sum(map(len, features.feature_groups(6).values())) == 24
