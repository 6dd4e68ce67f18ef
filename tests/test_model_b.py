"""Tests of Model B (causal patch transformer + shallow diffusion corrector), `test` preset."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from hybrid_jax import diffusion
from hybrid_jax import geometry as geometry_lib
from hybrid_jax.config import Geometry
from hybrid_jax.generators import model_b
from hybrid_jax.models.decoder import init_cache, shift_right

GEOMETRY = Geometry()  # the test preset's, the brief's: 16 patches of 192 values
SEQ_LEN, PATCH_DIM = GEOMETRY.num_patches, GEOMETRY.patch_dim


@pytest.fixture(scope="module")
def params(model_b_params, perturb):
    """Perturbed params: the corrector's U-Net outputs non-zero eps (fresh ones output zeros)."""
    return perturb(model_b_params, 1)


@pytest.fixture(scope="module")
def decoder(preset):
    return model_b.make_decoder(preset.model_b)


@pytest.fixture(scope="module")
def patches(stand_in_images):
    return geometry_lib.patchify(jnp.asarray(stand_in_images[:3]), GEOMETRY)


@pytest.fixture(scope="module")
def tf(decoder):
    """Jitted teacher forcing (one compile per batch shape, shared by the tests below)."""
    return jax.jit(lambda p, x: model_b.teacher_forcing(decoder, p, x))


@pytest.fixture(scope="module")
def sampler(model_b_sampler):
    return model_b_sampler


# ----------------------------------------------------------------------------- the causal decoder


def test_teacher_forcing_is_causal(tf, params, patches):
    """The prediction at position i (of patch i) never depends on patches i, i+1, ..., 15."""
    full = np.asarray(tf(params["ar"], patches))
    assert full.shape == (3, SEQ_LEN, PATCH_DIM)
    rng = np.random.default_rng(0)
    for i in range(SEQ_LEN):
        changed = patches.at[:, i:].set(jnp.asarray(rng.uniform(-1, 1, (3, SEQ_LEN - i, PATCH_DIM)), jnp.float32))
        out = np.asarray(tf(params["ar"], changed))
        np.testing.assert_array_equal(out[:, :i + 1], full[:, :i + 1], err_msg=f"patches >= {i} leaked")
        if i + 1 < SEQ_LEN:  # ... while position i + 1 does read patch i
            assert np.abs(out[:, i + 1] - full[:, i + 1]).max() > 1e-4, i


def test_cached_one_step_path_equals_full_causal_pass(tf, decoder, params, patches, preset):
    d = preset.model_b.decoder
    full = np.asarray(tf(params["ar"], patches))
    inputs = shift_right(patches)
    step = jax.jit(lambda p, x, i, cache: decoder.apply({"params": p}, x, i, cache))
    cache = init_cache(3, d.num_layers, d.width, d.num_heads, seq_len=SEQ_LEN)
    for i in range(SEQ_LEN):
        means, cache = step(params["ar"], inputs[:, i:i + 1], jnp.int32(i), cache)
        assert means.shape == (3, 1, PATCH_DIM)
        np.testing.assert_allclose(means[:, 0], full[:, i], atol=1e-5, err_msg=f"position {i}")


# ----------------------------------------------------------------------------- the sampler


@pytest.fixture(scope="module")
def keys():
    return jax.random.split(jax.random.key(2), 3)


@pytest.fixture(scope="module")
def prefix(sampler, params, keys):
    return sampler.ar_prefix(params, keys, 12)


def test_finish_of_prefix_equals_sample(sampler, params, keys, prefix, preset):
    assert sampler.passes == SEQ_LEN + preset.corrector.start_step
    whole = np.asarray(sampler.sample_keys(params, keys))
    resumed = np.asarray(sampler.finish(params, prefix))
    np.testing.assert_array_equal(resumed, whole)
    assert whole.shape == (3, 32, 32, 3) and whole.min() >= -1 and whole.max() <= 1
    assert not np.allclose(whole[0], whole[1])


def test_prefix_sown_intermediates(prefix, preset, tf, params):
    d = preset.model_b.decoder
    k, b = 12, 3
    assert prefix.attn.shape == (k, d.num_layers, b, d.num_heads, SEQ_LEN)
    assert prefix.hidden.shape == (k, d.num_layers, b, d.width)
    assert prefix.means.shape == (k, b, PATCH_DIM)
    assert prefix.tf_means.shape == (b, k, PATCH_DIM)
    assert int(prefix.state.step) == k
    attn = np.asarray(prefix.attn, np.float64)
    np.testing.assert_allclose(attn.sum(-1), 1.0, atol=1e-5)  # each query's weights are a distribution
    for step in range(k):  # step j's query sits at position j: it sees positions 0..j, nothing later
        assert np.all(attn[step, ..., step + 1:] == 0.0), step
        assert np.all(attn[step, ..., :step + 1] > 0.0), step
    # the AR steps' means are the decoder's teacher-forced predictions of the sampled patches
    sampled = np.asarray(prefix.state.patches)
    assert np.all(sampled[:, k:] == 0) and np.all(np.abs(sampled[:, :k]).sum(-1) > 0)
    tf_sampled = np.asarray(tf(params["ar"], jnp.asarray(sampled)))
    np.testing.assert_allclose(np.swapaxes(np.asarray(prefix.means), 0, 1), tf_sampled[:, :k], atol=1e-5)
    # sampled = mean + temperature * noise
    resid = (sampled[:, :k] - np.swapaxes(np.asarray(prefix.means), 0, 1)) / preset.model_b.temperature
    assert 0.8 < resid.std() < 1.2 and abs(resid.mean()) < 0.1


# ----------------------------------------------------------------------------- training


def _overfit(loss_fn, params, batch, steps: int, lr: float, seed: int = 3):
    """Adam on one fixed batch with one fixed key; the list of losses."""
    tx = optax.adam(lr)
    key = jax.random.key(seed)

    @jax.jit
    def step(params, opt_state):
        loss, grads = jax.value_and_grad(loss_fn)(params, batch, key)
        updates, opt_state = tx.update(grads, opt_state, params)
        return optax.apply_updates(params, updates), opt_state, loss

    params = jax.tree.map(jnp.array, params)
    opt_state, losses = tx.init(params), []
    for _ in range(steps):
        params, opt_state, loss = step(params, opt_state)
        losses.append(float(loss))
    return losses


def test_ar_loss_is_sum_of_per_patch_mse_and_falls_on_a_fixed_batch(preset, model_b_params, tf, stand_in_images):
    images = jnp.asarray(stand_in_images[:3])
    losses = _overfit(model_b.make_ar_loss(preset.model_b), model_b_params["ar"], images, steps=40, lr=3e-3)
    # the brief's loss: sum over the 16 patches of the squared error, averaged over the batch
    p = np.asarray(geometry_lib.patchify(images, GEOMETRY), np.float64)
    means = np.asarray(tf(model_b_params["ar"], jnp.asarray(p, jnp.float32)), np.float64)
    np.testing.assert_allclose(losses[0], ((means - p) ** 2).sum(axis=(1, 2)).mean(), rtol=1e-5)
    first, last = np.mean(losses[:3]), np.mean(losses[-5:])
    print(f"Model B AR overfit: loss {first:.2f} -> {last:.2f}")
    assert np.all(np.isfinite(losses)) and last < 0.5 * first, (first, last)


def test_corrector_loss_falls_and_it_moves_noised_images_towards_the_clean_ones(
        preset, model_b_params, sampler, stand_in_images):
    """Train the test-preset corrector (T = 10, start_step = 3) for 40 Adam steps (fresh t and
    noise each step) on 8 smooth images: its loss must fall. Then give it those images:
    `correct` noises them to step 3 and denoises 3 steps back. Its output must be much closer
    (MSE) to the clean images than the noised input it started from (the same noise `correct`
    draws: `fold_in(key, 1)` folded with `start_step`), and than what the untrained corrector
    makes of it. The test preset's corrector is large enough: no config override is needed."""
    ccfg = preset.corrector
    n = 8
    images = jnp.asarray(stand_in_images[:n])
    loss_fn = model_b.make_corrector_loss(ccfg)
    tx = optax.adam(1e-2)

    @jax.jit
    def step(params, opt_state, i):
        loss, grads = jax.value_and_grad(loss_fn)(params, images, jax.random.fold_in(jax.random.key(5), i))
        updates, opt_state = tx.update(grads, opt_state, params)
        return optax.apply_updates(params, updates), opt_state, loss

    trained = jax.tree.map(jnp.array, model_b_params["corrector"])
    opt_state, losses = tx.init(trained), []
    for i in range(40):
        trained, opt_state, loss = step(trained, opt_state, i)
        losses.append(float(loss))
    first, last = np.mean(losses[:10]), np.mean(losses[-10:])
    print(f"corrector loss {first:.4f} -> {last:.4f}")
    assert np.all(np.isfinite(losses)) and last < 0.5 * first, (first, last)

    keys = jax.random.split(jax.random.key(6), n)
    sched = diffusion.linear_schedule(ccfg.num_timesteps)
    c_keys = jax.vmap(lambda k: jax.random.fold_in(k, 1))(keys)
    noised = diffusion.q_sample(sched, images, jnp.full((n,), ccfg.start_step - 1),
                                diffusion.per_example_normal(c_keys, ccfg.start_step, images.shape[1:]))
    mse = lambda x: float(jnp.mean(jnp.square(x - images)))
    out = sampler.correct(trained, images, keys)
    before = sampler.correct(model_b_params["corrector"], images, keys)
    print(f"corrector MSE to clean: noised input {mse(noised):.4f}, untrained {mse(before):.4f}, "
          f"trained {mse(out):.4f}")
    assert out.shape == images.shape and float(jnp.abs(out).max()) <= 1.0
    assert mse(out) < 0.5 * mse(noised)
    assert mse(out) < 0.5 * mse(before)
