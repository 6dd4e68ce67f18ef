"""The hyperschedule family (`generators.hyperschedule`, `models.token_transformer`) at test size: its options and
pass counts, its config section (errors, a work dir's JSON gives it back), the network's settled tokens never read
noisy ones, training lowers the loss, and a seed's image does not depend on its batch."""

from __future__ import annotations

import dataclasses
import json

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from hybrid_jax import config as config_lib
from hybrid_jax import diffusion
from hybrid_jax import generators
from hybrid_jax import hyperschedule as hs
from hybrid_jax.config import ConfigError
from hybrid_jax.generators import hyperschedule as hsf

HS_TEST = config_lib.HyperscheduleOptions(  # the family at test size (FAMILIES.md's test row: d 32, 2 layers)
    network=config_lib.HSNetworkConfig(
        model=config_lib.TokenTransformerConfig(num_layers=2, width=32, num_heads=2, mlp_ratio=2), num_timesteps=20,
        schedules=(config_lib.HSSchedule("flat", 16, 0, 4), config_lib.HSSchedule("blocks", 4, 3, 3, "blocks"),
                   config_lib.HSSchedule("AR", 1, 1, 1, temperature=0.25)),
        context_level=3, train=config_lib.TrainConfig(epochs=1, batch_size=16, ckpt_every=100, log_every=2)),
    acs_k=(0, 1), probe_schedule="blocks", probe_rows=3)


@pytest.fixture(scope="module")
def cfg(preset):
    return dataclasses.replace(preset, hyperschedule=HS_TEST)


def _perturbed(cfg):
    p = hsf.init_params(hsf.make_model(cfg), jax.random.key(0))
    leaves, tree = jax.tree.flatten(p)  # the eps head starts at zero: perturb every leaf
    keys = jax.random.split(jax.random.key(1), len(leaves))
    return jax.tree.unflatten(tree, [x + 0.05 * jax.random.normal(k, x.shape) for x, k in zip(leaves, keys)])


@pytest.fixture(scope="module")
def params(cfg):
    return _perturbed(cfg)


def _sub_tokens(cfg, side: int = 4):
    return dataclasses.replace(cfg, hyperschedule=dataclasses.replace(HS_TEST, network=dataclasses.replace(
        HS_TEST.network, sub_patch=side)))


def test_the_family_offers_a_schedule_per_acs_k_with_its_passes_and_flops(preset, cfg, params):
    """Off in the test preset; set, its network is a training stage and each trained schedule x ACS k an option
    (most passes first) whose passes are the table's rows with an active token plus one per ACS row, each of its
    schedule's window (the previous block and the current one; the last token and the current one; the flat
    schedule's window is every token: dense), and FLOPs = passes x one pass of that window (XLA's cost), less than
    a dense pass's."""
    assert "hyperschedule" not in [f.name for f in generators.families(preset)]
    fam = generators.families(cfg)[-1]
    assert fam.name == "hyperschedule" and [n.name for n in fam.networks] == ["hyperschedule"]
    opts = fam.options(cfg)
    passes = {g.name: g.pass_counts for g in opts}
    assert passes == {"HS/flat tau 4, k 0": {"hs_pass": 4}, "HS/flat tau 4, k 1": {"hs_pass": 5},
                      "HS/blocks tau 3, k 0": {"hs_window_8": 12}, "HS/blocks tau 3, k 1": {"hs_window_8": 16},
                      "HS/AR tau 1, k 0": {"hs_window_2": 16}, "HS/AR tau 1, k 1": {"hs_window_2": 32}}
    assert [g.passes for g in opts] == sorted((g.passes for g in opts), reverse=True)
    f = fam.pass_flops(cfg, params)
    assert set(f) == {"hs_pass", "hs_window_8", "hs_window_2"}
    assert 0 < f["hs_window_2"] < f["hs_window_8"] < f["hs_pass"]
    assert all(g.flops(f) == pytest.approx(g.passes * f[next(iter(g.pass_counts))]) for g in opts)
    dense = dataclasses.replace(cfg, hyperschedule=dataclasses.replace(HS_TEST, windowed=False))
    assert {g.name: g.pass_counts for g in fam.options(dense)} == {n: {"hs_pass": sum(c.values())}
                                                                   for n, c in passes.items()}
    assert set(fam.pass_flops(dense, params)) == {"hs_pass"}
    blocks = hsf.table(HS_TEST.network.schedules[1], cfg.geometry)
    first = blocks.active[:3]  # the first quadrant's patches (raster 0, 1, 4, 5) only, for its 3 steps
    assert first[:, [0, 1, 4, 5]].all() and not np.delete(first, [0, 1, 4, 5], axis=1).any()


def test_its_config_is_checked_and_a_work_dirs_json_gives_it_back(cfg):
    from hybrid_jax.study import rundir

    assert rundir.preset_from_dict(json.loads(json.dumps(config_lib.to_dict(cfg)))) == cfg
    with pytest.raises(ConfigError, match="order must be one of"):
        config_lib.HSSchedule("x", 1, 1, 1, order="spiral")
    with pytest.raises(ConfigError, match="must divide the geometry's 16 patches"):
        dataclasses.replace(cfg, hyperschedule=dataclasses.replace(HS_TEST, probe_schedule=None, network=(
            dataclasses.replace(HS_TEST.network, schedules=(config_lib.HSSchedule("odd", 3, 1, 2),)))))
    with pytest.raises(ConfigError, match="names .* must differ"):
        dataclasses.replace(HS_TEST.network, schedules=HS_TEST.network.schedules[:1] * 2)
    with pytest.raises(ConfigError, match="acs_level=0 must be >= 1"):
        dataclasses.replace(HS_TEST, acs_level=0)
    levels = {s.name: hsf._acs(dataclasses.replace(cfg, hyperschedule=dataclasses.replace(HS_TEST, acs_level=2)), s,
                               1).level for s in HS_TEST.network.schedules}
    assert levels == {"flat": 2, "blocks": 2, "AR": 1}  # at most each schedule's tau
    with pytest.raises(ConfigError, match="HSSchedule sections, which a preset sets"):
        config_lib.override(cfg, "hyperschedule.network.schedules", "flat")
    assert config_lib.override(cfg, "hyperschedule.acs_window", "2").hyperschedule.acs_window == 2


def test_settled_tokens_never_read_the_noisy_ones(cfg, params):
    """The attention split that makes settled tokens cacheable: changing a noisy token changes no settled token's
    output, and a settled token reads the settled ones before it in the unit order only."""
    model, k = hsf.make_model(cfg), cfg.geometry.num_patches
    rng = np.random.default_rng(0)
    x = jnp.asarray(rng.standard_normal((2, k, cfg.geometry.patch_dim)), jnp.float32)
    t = jnp.asarray(np.where(np.arange(k) < 6, -1, 10)[None].repeat(2, 0), jnp.int32)  # tokens 0-5 settled
    run = lambda x: model.apply({"params": params}, x, t, t < 0, jnp.arange(k))
    out = run(x)
    moved = run(x.at[:, 9].add(1.0))  # a noisy token changed
    np.testing.assert_allclose(moved[:, :6], out[:, :6], atol=1e-6)
    assert np.abs(np.asarray(moved[:, 6:] - out[:, 6:])).max() > 1e-4
    later = run(x.at[:, 4].add(1.0))  # a settled token changed: those before it in the order do not see it
    np.testing.assert_allclose(later[:, :4], out[:, :4], atol=1e-6)
    assert np.abs(np.asarray(later[:, 5] - out[:, 5])).max() > 1e-4
    hidden = jnp.asarray(np.arange(k) == 9)[None].repeat(2, 0)  # a token at pure noise: only it reads itself
    run = lambda x: model.apply({"params": params}, x, t, t < 0, jnp.arange(k), None, hidden)
    out, moved = run(x), run(x.at[:, 9].add(1.0))
    np.testing.assert_allclose(np.delete(np.asarray(moved), 9, 1), np.delete(np.asarray(out), 9, 1), atol=1e-6)
    assert np.abs(np.asarray(moved[:, 9] - out[:, 9])).max() > 1e-4


def _waiting_table(rng, num_steps: int, order: np.ndarray, tau: int) -> hs.Table:
    """Tokens in the unit order `order` start after growing, jittered waits at pure noise and fall to 0 in random
    drops within tau + 2 rows (so they settle roughly, not exactly, in that order)."""
    levels = np.full((num_steps + 1, len(order)), tau, np.int32)
    for p, k in enumerate(order):
        wait = p * (num_steps - tau - 3) // len(order) + rng.integers(0, 2)
        n = rng.integers(1, tau + 1)
        rows = np.sort(rng.choice(np.arange(wait, wait + tau + 2), n, replace=False))
        after = np.concatenate([np.sort(rng.choice(np.arange(1, tau), n - 1, replace=False))[::-1], [0]])
        for r, level in zip(rows, after):
            levels[r + 1:, k] = level
    return hs.Table(levels, tau)


@pytest.mark.parametrize("seed,sub", [(0, None), (1, 4)], ids=["a token per unit", "four sub-tokens per unit"])
def test_the_windowed_cached_sampler_gives_the_dense_samplers_images_on_a_random_table(cfg, params, seed, sub):
    """Dense = windowed = cached: on a random table (units waiting, settling out of the unit order) with ACS, the
    windowed sampler (each row its window, the committed units' keys and values from the cache) gives the dense
    one's images, traces and attention entropies (1e-5), and so does a finish from a mid-table state whose cache one
    pass rebuilt; with the paper-like split of each unit into four 4 x 4 sub-tokens too."""
    if sub:
        cfg = _sub_tokens(cfg, sub)
        params = _perturbed(cfg)
    rng = np.random.default_rng(seed)
    g, T = cfg.geometry, HS_TEST.network.num_timesteps
    order = rng.permutation(g.num_patches)
    tab = _waiting_table(rng, 24, order, 4)
    acs = hs.ACS(2, 3, window=2)
    window = hs.Window.plan(tab, order, acs.window)
    assert window.size < g.num_patches and window.start.max() > 0  # a real window, a real cache
    model, tokens = hsf.make_model(cfg), diffusion.tile_tokens(g.image_size, g.image_size, g.patch_size)
    split = hsf.Tokens.of(cfg)
    nets = {"dense": hsf.make_dense_net(model, split, np.argsort(order), T), "windowed": hsf.make_cached_net(
        model, split, window, T)}
    keys = jax.random.split(jax.random.key(seed), 2)
    x_init = hs.token_noise(tokens)(keys, jnp.full((2, g.num_patches), T), g.image_shape)
    run = {m: jax.jit(lambda x, rows, net=net: hs.sample(net, params, tab, T, x, keys, tokens, acs=acs, rows=rows,
                                                          trace=True), static_argnums=1) for m, net in nets.items()}
    (x, tr), (xw, trw) = run["dense"](x_init, None), run["windowed"](x_init, None)
    x0s, ent, x0sw, entw = tr.x0, tr.aux, trw.x0, trw.aux
    assert np.abs(np.asarray(x - x_init)).max() > 0.1
    np.testing.assert_allclose(xw, x, atol=1e-5)
    np.testing.assert_allclose(x0sw, x0s, atol=1e-5)
    np.testing.assert_allclose(entw, ent, atol=1e-5)  # the attention entropy each pass reports, per row
    assert (np.asarray(ent[1]) > 0).any()
    mid = run["dense"](x_init, (0, 10))[0]
    np.testing.assert_allclose(run["windowed"](mid, (10, tab.num_steps))[0], x, atol=1e-5)


@pytest.mark.parametrize("windowed", [False, True], ids=["dense", "windowed"])
def test_per_seed_schedules_run_in_one_shape_and_give_each_seed_its_own_tables_image(cfg, params, windowed):
    """A table per example (blockwise, AR, sliding ramp: 12, 16 and 34 rows, padded with no-op rows to one shape;
    windowed at the largest window any of them needs): each example's image and trace are those of its own table
    sampled alone (1e-5), and a table that needs a larger window than the net's is a ConfigError."""
    g, T = cfg.geometry, HS_TEST.network.num_timesteps
    order = hsf.unit_order("blocks", g)
    tables = [hs.blockwise(16, 3, 4, order), hs.ar(16, order=order), hs.slide(16, 4, 2, order)]
    model, tokens = hsf.make_model(cfg), diffusion.tile_tokens(g.image_size, g.image_size, g.patch_size)
    size = max(hs.Window.plan(t, order, 1).size for t in tables)
    split = hsf.Tokens.of(cfg)
    net = (hsf.make_cached_net(model, split, hs.Window.plan(tables[0], order, 1, size), T) if windowed
           else hsf.make_dense_net(model, split, np.argsort(order), T))
    keys = jax.random.split(jax.random.key(5), 3)
    x_init = hs.token_noise(tokens)(keys, jnp.full((3, g.num_patches), T), g.image_shape)
    acs = hs.ACS(1, 1)
    x, tr = hs.sample(net, params, tables, T, x_init, keys, tokens, acs=acs, trace=True)
    x0s, ent = tr.x0, tr.aux
    assert [t.num_steps for t in tables] == [12, 16, 34] and x0s.shape == (34, 3, *g.image_shape)
    for i, tab in enumerate(tables):
        xi, tri = hs.sample(net, params, tab, T, x_init[i:i + 1], keys[i:i + 1], tokens, acs=acs, trace=True)
        x0i, ei = tri.x0, tri.aux
        np.testing.assert_allclose(x[i:i + 1], xi, atol=1e-5, err_msg=str(i))
        np.testing.assert_allclose(x0s[:tab.num_steps, i:i + 1], x0i, atol=1e-5, err_msg=str(i))
        np.testing.assert_allclose(ent[0][:tab.num_steps, i:i + 1], ei[0], atol=1e-5, err_msg=str(i))
        pad = np.asarray(x0s[tab.num_steps:, i])  # no-op rows: every token its own final value, clipped
        np.testing.assert_array_equal(pad, np.broadcast_to(np.clip(np.asarray(x[i]), -1, 1), pad.shape))
    if windowed:
        with pytest.raises(ConfigError, match="needs a window of 16 tokens, more than the sampler's"):
            hs.sample(net, params, [hs.flat(16, 3)] * 3, T, x_init, keys, tokens)


def test_sub_tokens_split_each_unit_and_merge_back_exactly(cfg, stand_in_images):
    """The paper-like split (`hyperschedule.network.sub_patch`): 16 units of 8 x 8 -> 64 tokens of 4 x 4, unit by
    unit (a unit's four tokens are its quadrants, raster), merged back bitwise; per-unit values repeat per token; a
    sub-patch that does not divide the patch is a ConfigError."""
    sub = _sub_tokens(cfg)
    split = hsf.Tokens.of(sub)
    assert (split.count, split.dim, split.per_unit) == (64, 48, 4)
    x = jnp.asarray(stand_in_images[:2])
    tokens = split.split(x)
    np.testing.assert_array_equal(split.merge(tokens), x)
    np.testing.assert_array_equal(tokens[:, 7].reshape(2, 4, 4, 3), x[:, 4:8, 12:16])  # unit 1, its bottom-right
    np.testing.assert_array_equal(split.expand(jnp.arange(3)), [0, 0, 0, 0, 1, 1, 1, 1, 2, 2, 2, 2])
    assert hsf.make_model(sub).num_tokens == 64
    with pytest.raises(ConfigError, match="sub_patch=3 must divide the geometry's patch_size=8"):
        _sub_tokens(cfg, 3)


def test_training_lowers_the_loss(cfg, stand_in_images):
    model = hsf.make_model(cfg)
    loss = hsf.make_loss(cfg)
    params = hsf.init_params(model, jax.random.key(2))
    opt = optax.adam(3e-3)
    state = opt.init(params)
    batch = jnp.asarray(stand_in_images[:16])

    @jax.jit
    def step(params, state, key):
        value, grads = jax.value_and_grad(loss)(params, batch, key)
        updates, state = opt.update(grads, state)
        return optax.apply_updates(params, updates), state, value

    held = jax.random.split(jax.random.key(4), 32)  # the same rows, timesteps and noise before and after
    judge = jax.jit(lambda p: jnp.mean(jax.vmap(lambda k: loss(p, batch, k))(held)))
    before = float(judge(params))
    for key in jax.random.split(jax.random.key(3), 100):
        params, state, _ = step(params, state, key)
    after = float(judge(params))
    assert after < 0.9 * before, (before, after)  # 0.999 -> 0.874 seen (predicting zero: 1.0)


def test_an_image_is_its_seeds_alone_and_acs_k_0_is_the_plain_sampler(cfg, params):
    opts = {g.name: g for g in generators.families(cfg)[-1].options(cfg)}
    keys = generators.stream_keys(np.arange(3), 0, hsf.STREAM)
    for name in ("HS/blocks tau 3, k 1", "HS/AR tau 1, k 0"):
        g = opts[name]
        batch = g.sample_keys(params, keys)
        assert batch.shape == (3, *cfg.geometry.image_shape) and np.isfinite(np.asarray(batch)).all()
        np.testing.assert_allclose(g.sample_keys(params, keys[1:2]), batch[1:2], atol=1e-5, err_msg=name)
    # k = 0 through the option is `hyperschedule.sample` without ACS; k = 1 corrects something
    plain, corrected = opts["HS/blocks tau 3, k 0"], opts["HS/blocks tau 3, k 1"]
    assert np.abs(np.asarray(plain.sample_keys(params, keys) - corrected.sample_keys(params, keys))).max() > 1e-3
    tab = hsf.table(HS_TEST.network.schedules[1], cfg.geometry)
    assert hs.ACS(1, 3, 1).passes(tab) == corrected.passes - plain.passes


def test_the_probe_runs_the_first_rows_and_its_options_finish_from_there(cfg, params):
    """The family's probe (`hyperschedule.probe_*`): the first rows of its schedule (here block 0 of the blockwise
    one), A's probe statistics of the predicted clean image over the tokens those rows move; each "after probe"
    option's finish from the probe's state (its cache rebuilt in one pass) is its one-shot image (its cache built row
    by row), and with k = 0 that of the schedule sampled in one run (1e-5: other programs); its correction scores
    are the gaps ACS reads after the row that settles block 0 (one scoring pass that corrects nothing); passes are
    the table's, the scoring pass, and ACS's in the rows after the probe."""
    (fam, probe), = [(f, p) for f, p in generators.probes(cfg) if f.name == "hyperschedule"]
    assert (probe.name, probe.feature_names) == ("HS", hsf.PROBE_FEATURES)
    assert [g.name for g in probe.options] == ["HS/blocks tau 3, k 1 after probe", "HS/blocks tau 3, k 0 after probe"]
    tab = hsf.table(HS_TEST.network.schedules[1], cfg.geometry)
    # one scoring pass (row 2 settles block 0); a windowed finish first rebuilds the cache of the probe's state: one
    # dense pass
    assert [g.pass_counts for g in probe.options] == [{"hs_window_8": 13 + hs.ACS(1, 3, 1).passes(tab, 3),
                                                       "hs_pass": 1}, {"hs_window_8": 13, "hs_pass": 1}]
    keys = generators.stream_keys(np.arange(3), 0, hsf.STREAM)
    state, feats = probe.run(params, keys)
    assert feats.shape == (3, len(hsf.PROBE_FEATURES)) and np.isfinite(np.asarray(feats)).all()
    entropy = np.asarray(feats[:, hsf.PROBE_FEATURES.index("hs_attn_entropy")])  # block 0's tokens read each other
    assert ((entropy > 0.05) & (entropy < 1.0)).all(), entropy
    s = hsf._Schedule(cfg, HS_TEST.network.schedules[1])
    x, trace = s.run(params, s.start(keys, None), (0, 3), hs.ACS(0, 3, 1), trace=True, score=True)
    np.testing.assert_allclose(x, state.x, atol=1e-5)  # scoring corrects nothing (1e-5: another program)
    gaps = np.asarray(trace.gaps)  # [3 rows, b, 16]: block 0's four tokens after row 2 only
    assert np.isfinite(gaps[2][:, [0, 1, 4, 5]]).all() and np.isnan(np.delete(gaps[2], [0, 1, 4, 5], 1)).all()
    assert np.isnan(gaps[:2]).all() and (gaps[2][:, [0, 1, 4, 5]] > 0).all()
    np.testing.assert_allclose(feats[:, -2:], np.stack([np.nanmean(gaps[2], 1), np.nanmax(gaps[2], 1)], 1),
                               rtol=1e-5)
    later = np.asarray(state.x)[:, 16:, :, :]  # block 0 is the top-left quadrant: the bottom half still noise
    start = np.asarray(hsf._Schedule(cfg, HS_TEST.network.schedules[1]).start(keys, None).x)[:, 16:]
    np.testing.assert_array_equal(later, start)
    for g in probe.options:
        np.testing.assert_allclose(g.finish(params, state), g.sample_keys(params, keys), atol=1e-5, err_msg=g.name)
    plain = {g.name: g for g in fam.options(cfg)}["HS/blocks tau 3, k 0"]
    np.testing.assert_allclose(probe.options[1].finish(params, state), plain.sample_keys(params, keys), atol=1e-5)
    both = type(state).concatenate([state.take(np.array([2])), state.take(np.array([0, 1]))])
    np.testing.assert_array_equal(both.x, state.x[np.array([2, 0, 1])])
    with pytest.raises(ConfigError, match="must name a trained schedule"):
        dataclasses.replace(HS_TEST, probe_schedule="spiral")
    with pytest.raises(ConfigError, match="probe_rows=12 must leave rows"):
        dataclasses.replace(cfg, hyperschedule=dataclasses.replace(HS_TEST, probe_rows=12))
