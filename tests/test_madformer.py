"""MADFormer (`models.madformer`, `generators.madformer`) at test size: the parallel training pass is the cached
block-by-block evaluation, prefix + finish is the one-shot sampler, images do not depend on their batch, S = 0 is
the decoded AR guess, and training lowers the loss."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from hybrid_jax.config import ConfigError, Geometry, MADFormerConfig
from hybrid_jax.generators import madformer as mad
from hybrid_jax.models.madformer import MADFormer, block_tokens, init_cache, unblock_tokens

GEOMETRY = Geometry()
PATCH, T = 8, 20
CFG = MADFormerConfig(num_layers=3, diffusion_layers=1, width=32, num_heads=2, mlp_ratio=2)


@pytest.fixture(scope="module")
def model():
    return mad.make_model(CFG, GEOMETRY, PATCH, num_classes=2)


@pytest.fixture(scope="module")
def params(model):
    p = mad.init_params(model, jax.random.key(0))
    # the heads start at small random values: perturb every leaf so that no path is trivially zero
    leaves, tree = jax.tree.flatten(p)
    keys = jax.random.split(jax.random.key(1), len(leaves))
    return jax.tree.unflatten(tree, [x + 0.05 * jax.random.normal(k, x.shape) for x, k in zip(leaves, keys)])


def test_block_tokens_are_the_quadrants_patches_and_invert_exactly():
    x = jax.random.normal(jax.random.key(0), (2, *GEOMETRY.image_shape))
    tokens = block_tokens(x, GEOMETRY, PATCH)
    assert tokens.shape == (2, 16, PATCH * PATCH * 3)
    np.testing.assert_array_equal(unblock_tokens(tokens, GEOMETRY, PATCH), x)
    np.testing.assert_array_equal(tokens[:, 0].reshape(2, PATCH, PATCH, 3), x[:, :PATCH, :PATCH])  # TL of TL
    np.testing.assert_array_equal(tokens[:, 4].reshape(2, PATCH, PATCH, 3), x[:, :PATCH, 16:16 + PATCH])  # TR's


def test_the_parallel_training_pass_is_the_cached_block_by_block_evaluation(model, params):
    """Every block at its own timestep in one pass = the clean stream block by block through the cache, then the
    noisy stream on each block alone (1e-5); the AR guess too; and a block's eps does not read later blocks."""
    rng = np.random.default_rng(0)
    clean = jnp.asarray(rng.standard_normal((2, 16, model.token_dim)), jnp.float32)
    x_t = jnp.asarray(rng.standard_normal(clean.shape), jnp.float32)
    t = jnp.repeat(jnp.asarray(rng.integers(0, T, (2, 4))), 4, axis=1)
    labels = jnp.array([0, 1])
    v = {"params": params}
    eps, guess = model.apply(v, clean, x_t, t, labels)
    cache = init_cache(2, CFG.num_layers, CFG.width, CFG.num_heads, 16)
    for j in range(4):
        prev = clean[:, max(j - 1, 0) * 4:max(j - 1, 0) * 4 + 4]
        cond, cache = model.apply(v, prev, j, cache, labels, method=MADFormer.clean)
        sl = slice(4 * j, 4 * j + 4)
        got = model.apply(v, x_t[:, sl], t[:, sl], cond, cache, j, method=MADFormer.denoise)
        np.testing.assert_allclose(got, eps[:, sl], atol=1e-5, err_msg=f"block {j}")
        np.testing.assert_allclose(model.apply(v, cond, method=MADFormer.decode), guess[:, sl], atol=1e-5)
    later = clean.at[:, 8:].set(0.0)  # blocks 2, 3 changed: blocks 0..2's eps unchanged (block 2 reads blocks < 2)
    eps2, _ = model.apply(v, later, x_t, t, labels)
    np.testing.assert_allclose(eps2[:, :12], eps[:, :12], atol=1e-5)
    assert np.abs(np.asarray(eps2[:, 12:] - eps[:, 12:])).max() > 1e-4  # block 3 reads block 2


@pytest.mark.parametrize("steps", [0, 3])
def test_prefix_then_finish_is_the_one_shot_sampler_and_an_image_is_its_seeds_alone(model, params, steps):
    s = mad.make_sampler(model, GEOMETRY, PATCH, T, steps, num_classes=2)
    keys, labels = jax.random.split(jax.random.key(3), 3), jnp.array([0, 1, 1])
    images = s.sample_keys(params, keys, labels)
    assert images.shape == (3, *GEOMETRY.image_shape) and np.isfinite(np.asarray(images)).all()
    # other programs and batches: XLA's rounding, which the ancestral steps carry (A's tests allow 1e-3)
    probed = s.prefix(params, keys, labels)
    np.testing.assert_allclose(s.finish(params, probed), images, atol=1e-4)
    np.testing.assert_allclose(s.finish(params, probed.take(np.array([2, 0]))), images[np.array([2, 0])], atol=1e-4)
    alone = s.sample_keys(params, keys[1:2], labels[1:2])
    np.testing.assert_allclose(alone, images[1:2], atol=1e-4)
    assert s.passes == {"mad_ar": 4, "mad_diffusion": 4 * steps}
    assert np.abs(np.asarray(images[0] - images[1])).max() > 1e-3  # other seeds, other classes: other images


def test_zero_steps_is_the_decoded_ar_guess_block_by_block(model, params):
    """S = 0: each block is the clean stream's decoded guess given the blocks drawn before it."""
    s = mad.make_sampler(model, GEOMETRY, PATCH, T, 0)
    keys = jax.random.split(jax.random.key(4), 2)
    v, labels = {"params": params}, jnp.zeros((2,), jnp.int32)
    cache, drawn = init_cache(2, CFG.num_layers, CFG.width, CFG.num_heads, 16), []
    for j in range(4):
        prev = drawn[-1] if drawn else jnp.zeros((2, 4, model.token_dim))
        cond, cache = model.apply(v, prev, j, cache, labels, method=MADFormer.clean)
        drawn.append(model.apply(v, cond, method=MADFormer.decode))
    want = jnp.clip(unblock_tokens(jnp.concatenate(drawn, 1), GEOMETRY, PATCH), -1, 1)
    np.testing.assert_allclose(s.sample_keys(params, keys, labels), want, atol=1e-5)


def test_training_lowers_the_loss(model, stand_in_images):
    loss = mad.make_loss(model, GEOMETRY, PATCH, T)
    params = mad.init_params(model, jax.random.key(0))
    opt = optax.adam(3e-3)
    batch = (jnp.asarray(stand_in_images[:16]), jnp.zeros((16,), jnp.int32))

    @jax.jit
    def step(carry, key):
        p, s = carry
        value, grads = jax.value_and_grad(loss)(p, batch, key)
        updates, s = opt.update(grads, s, p)
        return (optax.apply_updates(p, updates), s), value

    keys = jax.random.split(jax.random.key(1), 60)
    _, losses = jax.lax.scan(step, (params, opt.init(params)), keys)
    losses = np.asarray(losses)
    assert losses[-10:].mean() < 0.8 * losses[:10].mean(), losses


def test_a_wrong_split_or_patch_is_refused():
    with pytest.raises(ConfigError, match="diffusion_layers=3 must be in"):
        MADFormerConfig(num_layers=3, diffusion_layers=3)
    with pytest.raises(ValueError, match="patch size 5 must divide the block size 16"):
        mad.make_model(CFG, GEOMETRY, 5)


def test_the_family_is_in_a_study_when_its_section_is_set_with_an_option_per_step_count(preset, params, model):
    """`Preset.madformer` None (the test preset): no MADFormer; set: its network is a training stage, an option per
    step count (most steps first) whose passes are blocks AR passes + blocks x S diffusion steps, and FLOPs = per-call
    XLA cost x calls."""
    import dataclasses

    from hybrid_jax import config as config_lib
    from hybrid_jax import generators
    from hybrid_jax.generators import registry
    from hybrid_jax.study import rundir

    assert "madformer" not in [f.name for f in generators.families(preset)]
    on = dataclasses.replace(preset, madformer=config_lib.MADFormerOptions(
        network=config_lib.MADNetworkConfig(model=CFG, patch_size=PATCH, num_timesteps=T), steps=(0, 3)))
    assert [n.name for n in registry.networks(on)][-1] == "madformer"
    opts = generators.families(on)[-1].options(on)
    assert [g.name for g in opts] == ["MAD/3 steps", "MAD/0 steps"]
    assert [g.pass_counts for g in opts] == [{"mad_ar": 4, "mad_diffusion": 12}, {"mad_ar": 4, "mad_diffusion": 0}]
    one_class = mad.init_params(mad.make_model(CFG, GEOMETRY, PATCH), jax.random.key(0))
    f = mad.pass_flops(on, one_class)
    assert f["mad_ar"] > 0 and f["mad_diffusion"] > 0
    assert opts[0].flops(f) == pytest.approx(4 * f["mad_ar"] + 12 * f["mad_diffusion"])
    assert opts[1].flops(f) == pytest.approx(4 * f["mad_ar"])
    assert rundir.preset_from_dict(config_lib.to_dict(on)) == on  # a work dir's config gives it back
    with pytest.raises(ConfigError, match="madformer is off in this config"):
        config_lib.override(preset, "madformer.steps", "3")


@pytest.mark.parametrize("probe_steps", [0, 2])
def test_the_probe_reads_block_0_and_its_options_continue_it(preset, params, model, probe_steps):
    """MADFormer's own probe (`madformer.probe_steps`): its state is `prefix`'s at that step count (1e-5), each
    "after probe" option's finish continuing it is that option's one-shot image (1e-4: other programs), passes
    are block 0 at the probe's steps + the later blocks at the option's; the features are A's probe statistics of
    block 0's predicted clean block plus the gap to the decoded guess (computed here directly), all 0 drift and gap
    where block 0 is the guess (0 steps)."""
    import dataclasses

    from hybrid_jax import config as config_lib
    from hybrid_jax import generators

    on = dataclasses.replace(preset, data=dataclasses.replace(preset.data, class_name="dog,cat"),
                             madformer=config_lib.MADFormerOptions(network=config_lib.MADNetworkConfig(
                                 model=CFG, patch_size=PATCH, num_timesteps=T), steps=(3, 0), probe_steps=probe_steps))
    fam, probe = generators.probes(on)[-1]
    assert (fam.name, probe.name, probe.feature_names) == ("madformer", "MAD", mad.PROBE_FEATURES)
    assert [g.name for g in probe.options] == ["MAD/3 steps after probe", "MAD/0 steps after probe"]
    assert [g.pass_counts for g in probe.options] == [{"mad_ar": 4, "mad_diffusion": probe_steps + 9},
                                                      {"mad_ar": 4, "mad_diffusion": probe_steps}]
    keys, labels = jax.random.split(jax.random.key(4), 3), jnp.array([0, 1, 1])
    state, feats = probe.run(params, keys, labels)
    assert feats.shape == (3, len(mad.PROBE_FEATURES)) and np.isfinite(np.asarray(feats)).all()
    prefix = mad.make_sampler(model, GEOMETRY, PATCH, T, probe_steps, num_classes=2).prefix(params, keys, labels)
    np.testing.assert_allclose(state.tokens, prefix.tokens, atol=1e-5)
    for g in probe.options:
        np.testing.assert_allclose(g.finish(params, state), g.sample_keys(params, keys, labels), atol=1e-4,
                                   err_msg=g.name)
    v = {"params": params}
    cond, _ = model.apply(v, jnp.zeros((3, 4, model.token_dim)), 0, init_cache(3, CFG.num_layers, CFG.width,
                                                                               CFG.num_heads, 16), labels,
                          method=MADFormer.clean)
    guess = model.apply(v, cond, method=MADFormer.decode)
    gap = np.mean(np.square(np.asarray(state.tokens[:, :4]) - np.asarray(guess)), axis=(1, 2))
    column = lambda name: np.asarray(feats[:, mad.PROBE_FEATURES.index(name)])
    np.testing.assert_allclose(column("mad_guess_gap"), gap, rtol=1e-4, atol=1e-7)
    drift, entropy = column("mad_x0_drift"), column("mad_attn_entropy")
    if probe_steps == 0:  # the guess itself: no step moves it, no noisy query attends
        np.testing.assert_array_equal(column("mad_guess_gap"), 0.0)
        np.testing.assert_array_equal(drift, 0.0)
        np.testing.assert_array_equal(entropy, 0.0)
    else:
        assert (column("mad_guess_gap") > 0).all() and (drift > 0).all()
        assert ((entropy > 0.05) & (entropy < 1.0)).all(), entropy
    both = type(state).concatenate([state.take(np.array([2])), state.take(np.array([0, 1]))])
    np.testing.assert_array_equal(both.tokens, state.tokens[np.array([2, 0, 1])])
    np.testing.assert_array_equal(both.cache.k, state.cache.k[:, np.array([2, 0, 1])])
    with pytest.raises(ConfigError, match="probe_steps=30 must be in"):
        dataclasses.replace(on.madformer, probe_steps=30)
