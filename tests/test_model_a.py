"""Tests of Model A (blockwise conditional DDPM) and its U-Net, on the tiny `test` preset."""

from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from hybrid_jax import diffusion, geometry
from hybrid_jax.config import get_preset
from hybrid_jax.generators import model_a
from hybrid_jax.models import build
from hybrid_jax.models.unet import UNet
from hybrid_jax.probe import features


def count_params(tree) -> int:
    return int(sum(np.prod(x.shape) for x in jax.tree.leaves(tree)))


# ----------------------------------------------------------------------------- the U-Net


def test_unet_output_shape_equals_input_shape(preset, model_a_params):
    cfg = preset.model_a
    unet = model_a.make_unet(cfg)
    x = jax.random.normal(jax.random.key(0), (3, 32, 32, 3))
    t = jnp.array([0, 1, cfg.steps_per_block - 1])
    cond = model_a.block_condition(x, jnp.array([0, 1, 3]), preset.geometry)
    assert cond.shape == (3, 32, 32, model_a.COND_CHANNELS)
    out = jax.eval_shape(lambda p: unet.apply({"params": p}, x, t, cond), model_a_params)
    assert out.shape == x.shape and out.dtype == jnp.float32
    # without conditioning (Model B's corrector): shapes only, no compile needed
    out_shape = jax.eval_shape(lambda k: unet.init_with_output(k, x, t)[0], jax.random.key(0))
    assert out_shape.shape == x.shape and out_shape.dtype == jnp.float32
    # bf16 compute still returns f32
    bf16 = build(UNet, dataclasses.replace(cfg.unet, dtype="bfloat16"))
    assert jax.eval_shape(lambda k: bf16.init_with_output(k, x, t, cond)[0], jax.random.key(0)).dtype == jnp.float32


def test_paper_unet_has_35_7m_parameters():
    cfg = get_preset("paper").model_a
    shapes = jax.eval_shape(lambda k: model_a.init_params(cfg, k), jax.random.key(0))
    n = count_params(shapes)
    print(f"paper Model A U-Net: {n:,} parameters")
    assert 35.5e6 <= n <= 36.0e6, n


@pytest.fixture(scope="module")
def loss_and_grad(preset):
    return jax.jit(jax.value_and_grad(model_a.make_loss(preset.model_a)))


@pytest.fixture(scope="module")
def four_images(stand_in_images):
    return jnp.asarray(stand_in_images[:4])


def test_gradients_are_finite_and_reach_every_layer(loss_and_grad, model_a_params, perturb, four_images):
    loss, grads = loss_and_grad(model_a_params, four_images, jax.random.key(1))
    assert np.isfinite(float(loss))
    assert all(np.all(np.isfinite(g)) for g in jax.tree.leaves(grads))
    # fresh params end in a zero conv, so only its grads are non-zero; with perturbed params all are
    _, grads = loss_and_grad(perturb(model_a_params, 2), four_images, jax.random.key(1))
    flat = jax.tree_util.tree_leaves_with_path(grads)
    dead = [jax.tree_util.keystr(p) for p, g in flat if not np.any(np.asarray(g) != 0)]
    assert not dead, dead
    assert all(np.all(np.isfinite(g)) for _, g in flat)


def test_loss_is_eps_mse_on_the_target_block(preset, loss_and_grad, model_a_params, perturb, four_images):
    """make_loss = epsilon-MSE over the target block's pixels only, the U-Net seeing the noisy
    target block and the clean earlier blocks (recomputed here from the documented recipe)."""
    cfg = preset.model_a
    params = perturb(model_a_params, 3)
    key = jax.random.key(4)
    sched = diffusion.linear_schedule(cfg.steps_per_block)

    @jax.jit
    def by_hand(params, images):
        k_block, k_t, k_noise = (jax.random.fold_in(key, i) for i in range(3))
        block = jax.random.randint(k_block, (4,), 0, preset.geometry.num_blocks)
        t = jax.random.randint(k_t, (4,), 0, cfg.steps_per_block)
        noise = jax.random.normal(k_noise, images.shape)
        tgt = jnp.asarray(geometry.block_masks(preset.geometry))[block]
        ctx = jnp.asarray(geometry.context_masks(preset.geometry))[block]
        x_t = diffusion.q_sample(sched, images, t, noise) * tgt
        eps = model_a.make_unet(cfg).apply({"params": params}, x_t, t,
                                           jnp.concatenate([images * ctx, ctx, tgt], axis=-1))
        sq = jnp.square(eps - noise)
        return jnp.sum(sq * tgt) / (3 * jnp.sum(tgt)), jnp.mean(sq), block

    masked, unmasked, block = by_hand(params, four_images)
    got = float(loss_and_grad(params, four_images, key)[0])
    assert len(set(np.asarray(block).tolist())) > 1  # the batch mixes target blocks
    np.testing.assert_allclose(got, float(masked), rtol=1e-5)
    assert abs(got - float(unmasked)) > 1e-3 * got


def test_overfits_a_fixed_batch(loss_and_grad, model_a_params, four_images):
    """A fixed key fixes block, t and noise: the loss is a plain regression the U-Net can fit."""
    tx = optax.adam(3e-3)
    key = jax.random.key(5)

    @jax.jit
    def update(params, opt_state, grads):
        updates, opt_state = tx.update(grads, opt_state, params)
        return optax.apply_updates(params, updates), opt_state

    params = jax.tree.map(jnp.array, model_a_params)
    opt_state = tx.init(params)
    losses = []
    for _ in range(60):
        loss, grads = loss_and_grad(params, four_images, key)
        params, opt_state = update(params, opt_state, grads)
        losses.append(float(loss))
    first, last = np.mean(losses[:3]), np.mean(losses[-5:])
    print(f"Model A overfit: loss {first:.4f} -> {last:.4f}")
    assert np.all(np.isfinite(losses))
    assert last < 0.5 * first, (first, last)


# ----------------------------------------------------------------------------- the sampler


@pytest.fixture(scope="module")
def sampler(model_a_sampler):
    return model_a_sampler


@pytest.fixture(scope="module")
def params(model_a_params, perturb):
    """Perturbed params: the U-Net's output depends on its inputs (fresh ones output zeros)."""
    return perturb(model_a_params, 6)


def test_sampler_deterministic_shape_range(sampler, params, preset):
    assert sampler.passes == preset.geometry.num_blocks * preset.model_a.steps_per_block == 16
    key = jax.random.key(7)
    a = np.asarray(sampler.sample(params, key, 4))
    b = np.asarray(sampler.sample(params, key, 4))
    assert a.shape == (4, 32, 32, 3) and a.dtype == np.float32
    np.testing.assert_array_equal(a, b)
    assert a.min() >= -1.0 and a.max() <= 1.0
    assert np.all(np.isfinite(a)) and a.std() > 0.01
    # `sample` is `sample_keys` on split keys; different keys give different images
    np.testing.assert_array_equal(a, np.asarray(sampler.sample_keys(params, jax.random.split(key, 4))))
    assert not np.allclose(a[0], a[1])
    assert not np.allclose(a, np.asarray(sampler.sample(params, jax.random.key(8), 4)))


def test_image_of_a_key_is_independent_of_its_batch(sampler, params):
    keys = jax.random.split(jax.random.key(9), 4)
    batch = np.asarray(sampler.sample_keys(params, keys))
    # Another order or batch size may change XLA's kernels (and so the rounding, amplified by 16 steps through
    # the clipped x0 prediction), never the noise: reordering is bitwise on some CPUs, 4e-5 off on an AVX2-only one.
    np.testing.assert_allclose(np.asarray(sampler.sample_keys(params, keys[::-1]))[::-1], batch, atol=1e-4)
    alone = np.asarray(sampler.sample_keys(params, keys[:1]))
    np.testing.assert_allclose(alone[0], batch[0], atol=1e-3)
    other = np.asarray(sampler.sample_keys(params, keys[1:2]))[0]
    assert np.abs(other - batch[0]).max() > 0.1  # a different key: a different image


def _block_of(cond: jax.Array) -> jax.Array:
    """Index [b] of the block being generated, read off the target-mask channel of `cond`."""
    tgt = cond[..., -1]
    bottom = jnp.sum(tgt[:, 16:, :], axis=(1, 2)) > 0
    right = jnp.sum(tgt[:, :, 16:], axis=(1, 2)) > 0
    return 2 * bottom.astype(jnp.int32) + right.astype(jnp.int32)


@pytest.fixture(scope="module")
def instrumented(preset):
    """Model A's own sampler with an instrumented eps_fn.

    `make_eps_fn` is replaced (only while the sampler is built) by a wrapper that
      * counts its calls at run time (`jax.debug.callback`, so a cached executable counts too),
      * records which block each call generates (read off the target mask in `cond`),
      * returns large random junk instead of the U-Net's eps for the blocks where
        `params["junk"][block]` is 1.
    The params passed to the sampler are `{"unet": U-Net params, "junk": float[4]}`; the sampler
    hands them through to eps_fn untouched, so one compiled sampler serves every experiment.
    """
    calls: list[np.ndarray] = []
    real = model_a.make_eps_fn

    def make_eps_fn(cfg, train: bool = False, num_classes: int = 1):
        inner = real(cfg, train, num_classes)

        def eps_fn(p, x_t, t, cond, rngs=None):
            block = _block_of(cond[0])
            jax.debug.callback(lambda b: calls.append(np.asarray(b)), block, ordered=True)
            eps = inner(p["unet"], x_t, t, cond, rngs=rngs)
            junk = 30.0 * jax.random.normal(jax.random.fold_in(jax.random.key(99), t[0]), eps.shape)
            return jnp.where((p["junk"][block] > 0)[:, None, None, None], junk, eps)

        return eps_fn

    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(model_a, "make_eps_fn", make_eps_fn)
        sampler = model_a.make_sampler(preset.model_a)
    return sampler, calls


def test_sampler_runs_the_unet_4_x_steps_times(instrumented, params, preset):
    sampler, calls = instrumented
    steps = preset.model_a.steps_per_block
    keys = jax.random.split(jax.random.key(10), 3)
    for _ in range(2):  # the second call runs the cached executable: counted at run time
        calls.clear()
        sampler.sample_keys({"unet": params, "junk": jnp.zeros(4)}, keys).block_until_ready()
        jax.effects_barrier()
        assert len(calls) == sampler.passes == 4 * steps
        # blocks in raster order, `steps` passes each, the whole batch at once
        assert [int(c[0]) for c in calls] == [b for b in range(4) for _ in range(steps)]
        assert all(c.shape == (3,) and np.all(c == c[0]) for c in calls)


def test_generated_blocks_never_change_and_later_blocks_see_them(instrumented, params, preset):
    """Pixels of a block are final once the block is generated; later blocks read them.

    Method: sample the same keys twice with Model A's real sampler, once with the true U-Net
    and once with the U-Net's output replaced by large random junk for every block after b.
    All randomness comes from the keys, so the two runs are identical up to the end of block
    b. If any later step wrote to, re-noised or re-clipped the pixels of blocks <= b, the
    junk (which wrecks blocks > b, checked) would reach them; it must not: they are bitwise
    equal. Conversely, junk in block 0 alone changes blocks 1..3 too, because they are
    conditioned on block 0's pixels through the context canvas.
    """
    sampler, _ = instrumented
    keys = jax.random.split(jax.random.key(11), 3)
    run = lambda junk: np.asarray(sampler.sample_keys({"unet": params, "junk": jnp.asarray(junk, jnp.float32)},
                                                      keys))
    masks = geometry.block_masks(preset.geometry)[..., 0] > 0  # [4, 32, 32]
    clean = run([0, 0, 0, 0])
    for b in range(4):
        junk = [0.0] * (b + 1) + [1.0] * (3 - b)
        out = run(junk)
        for blk in range(4):
            same = np.array_equal(out[:, masks[blk]], clean[:, masks[blk]])
            assert same == (blk <= b), (b, blk)

    only_first = run([1, 0, 0, 0])
    for blk in range(4):
        assert not np.allclose(only_first[:, masks[blk]], clean[:, masks[blk]], atol=1e-3), blk


# ----------------------------------------------------------------------------- A's own probe, then continue

def test_probe_visits_are_the_probes_steps_then_the_budgets_rest():
    assert model_a.probe_visits(10, 2, 50, 200).tolist()[:3] == diffusion.respace(200, 10)[:3].tolist()
    v = model_a.probe_visits(10, 2, 50, 200)
    assert v[3:].tolist() == [t for t in diffusion.respace(200, 50) if t < v[2]]
    assert model_a.probe_visits(4, 1, 4, 4).tolist() == [3, 2, 1, 0]
    assert model_a.probe_visits(4, 1, 2, 4).tolist() == [3, 2, 0]


@pytest.mark.parametrize("budget", [4, 2])
def test_probe_then_continue_is_one_uninterrupted_run(preset, params, sampler, budget):
    """Bitwise: the continuation runs the uninterrupted chain's remaining steps on the probe's state."""
    cfg = preset.model_a
    probed = model_a.make_probed_sampler(cfg, budget, probe_budget=4, probe_steps=1)
    whole = model_a.make_sampler(cfg, budget, first_block=probed.visits)
    keys = jax.random.split(jax.random.key(11), 4)
    probe = probed.probe(params, keys)
    assert probe.x0.shape == (1, 4, 32, 32, 3)
    resumed = np.asarray(probed.finish(params, probe))
    np.testing.assert_array_equal(resumed, np.asarray(whole.sample_keys(params, keys)))
    np.testing.assert_array_equal(np.asarray(probed.sample_keys(params, keys)), resumed)
    assert probed.passes == whole.passes == len(probed.visits) + 3 * budget
    if budget == cfg.steps_per_block:  # the probe's steps are the full chain's first steps: today's image
        np.testing.assert_array_equal(resumed, np.asarray(sampler.sample_keys(params, keys)))
    feats = np.asarray(features.a_probe(probe.x0, geometry.block_masks(preset.geometry)[0]))
    assert feats.shape == (4, len(features.A_PROBE)) and np.isfinite(feats).all()


# ----------------------------------------------------------------------------- a longer trained chain


def test_a_longer_trained_chain_is_sampled_respaced_and_trained_on_all_its_timesteps(preset, params, four_images):
    """num_timesteps = T > steps_per_block = s: the loss draws t from all T timesteps and the sampler visits s of
    them, respaced; both bitwise as the model with steps_per_block = T at step budget s."""
    from hybrid_jax.config import ConfigError

    s = preset.model_a.steps_per_block
    longer = dataclasses.replace(preset.model_a, num_timesteps=5 * s)
    as_full = dataclasses.replace(preset.model_a, steps_per_block=5 * s)
    assert longer.timesteps == 5 * s and preset.model_a.timesteps == s
    keys = jax.random.split(jax.random.key(3), 2)
    sampler = model_a.make_sampler(longer)
    assert sampler.passes == 4 * s
    np.testing.assert_array_equal(sampler.sample_keys(params, keys),
                                  model_a.make_sampler(as_full, budget=s).sample_keys(params, keys))
    key = jax.random.key(4)
    assert model_a.make_loss(longer)(params, four_images, key) == model_a.make_loss(as_full)(params, four_images, key)
    assert model_a.make_loss(longer)(params, four_images, key) != model_a.make_loss(preset.model_a)(params, four_images,
                                                                                                   key)
    with pytest.raises(ConfigError, match="num_timesteps"):
        dataclasses.replace(preset.model_a, num_timesteps=s - 1)
