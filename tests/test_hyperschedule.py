"""Hyperschedules (`hybrid_jax.hyperschedule`): the builders' tables, invalid tables refused, a flat table is the
respaced sampler bitwise, padding rows are no-ops, a NumPy reference on a random table agrees, and with the exact
denoiser of Gaussian data the flat and blockwise schedules reproduce the data covariance and AR is exact when its
temperature is the conditional standard deviation."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from hybrid_jax import diffusion
from hybrid_jax import hyperschedule as hs
from hybrid_jax.config import ConfigError

ORDER16 = np.array([0, 1, 4, 5, 2, 3, 6, 7, 8, 9, 12, 13, 10, 11, 14, 15])  # A's quadrants of a 4 x 4 patch grid

QUADRANT_MAJOR = [0, 1, 4, 5, 2, 3, 6, 7, 8, 9, 12, 13, 10, 11, 14, 15]  # B's 4 x 4 patches by A's quadrants


def test_builders_give_the_schedules_they_name():
    np.testing.assert_array_equal(hs.flat(3, 4).levels, np.repeat(np.arange(4, -1, -1)[:, None], 3, axis=1))
    a = hs.ar(4)  # one jump per token, in order
    np.testing.assert_array_equal(a.levels, [[1, 1, 1, 1], [0, 1, 1, 1], [0, 0, 1, 1], [0, 0, 0, 1], [0, 0, 0, 0]])
    assert (a.num_steps, a.passes, a.token_passes) == (4, 4, 4)
    blocks = hs.blockwise(16, 5, 4, order=QUADRANT_MAJOR)
    assert (blocks.num_steps, blocks.passes, blocks.token_passes) == (20, 20, 80)
    first = blocks.active[:5]  # the first quadrant's patches (0, 1, 4, 5) only, every step of its chain
    assert first[:, [0, 1, 4, 5]].all() and not np.delete(first, [0, 1, 4, 5], axis=1).any()
    ramp = hs.slide(3, 4, 2)
    np.testing.assert_array_equal(ramp.levels[:, 1], [4, 4, 4, 3, 2, 1, 0, 0, 0])
    assert ramp.num_steps == 8 and ramp.token_passes == 12
    padded = ramp.padded(11)
    assert padded.num_steps == 11 and padded.passes == ramp.passes and (padded.levels[9:] == 0).all()
    np.testing.assert_array_equal(hs.timesteps(4, 100), [-1, 0, 33, 66, 99])


@pytest.mark.parametrize("levels, tau, match", [
    ([[2, 2], [1, 2], [2, 0], [0, 0]], 2, "token 0 rises from 1 to 2 at step 2"),
    ([[2, 2], [1, 1], [0, 1]], 2, "token 1 ends at level 1, not 0"),
    ([[3, 2], [0, 0]], 2, "level 3 at step 0, token 0 is outside"),
    ([[2, 2]], 2, r"at least one step and one token, got shape \(1, 2\)"),
    ([[1.0], [0.0]], 1, "must be integers"),
])
def test_an_invalid_table_is_a_config_error_naming_the_problem(levels, tau, match):
    with pytest.raises(ConfigError, match=match):
        hs.Table(np.asarray(levels), tau)


def test_bad_builder_arguments_are_config_errors():
    with pytest.raises(ConfigError, match="permutation of 0..3"):
        hs.ar(4, order=[0, 1, 1, 2])
    with pytest.raises(ConfigError, match="group of 3 tokens must divide the 4"):
        hs.blockwise(4, 2, 3)
    with pytest.raises(ConfigError, match="cannot pad a 4-step"):
        hs.flat(2, 4).padded(3)


def _tokens_eps(eps):
    """A per-image eps function as a per-token one (every token at the same timestep)."""
    return lambda params, x, t, cond: eps(params, x, t[:, 0], cond)


def _eps(params, x, t, cond):  # a smooth function of x and the timestep, different per pixel
    return jnp.tanh(params * x + 0.003 * t[:, None, None, None].astype(jnp.float32))


TOKENS = diffusion.tile_tokens(8, 8, 4)  # 4 tokens of 4 x 4 pixels


def _per_token_eps(params, x, t, cond):  # as `_eps`, each pixel reading its own token's timestep (t [b, K])
    t_pixel = jnp.take(t, jnp.asarray(TOKENS)[..., 0], axis=1)[..., None]  # [b, 8, 8, 1]
    return jnp.tanh(params * x + 0.003 * t_pixel.astype(jnp.float32))


def test_a_flat_table_is_the_respaced_sampler_and_padding_rows_change_nothing():
    """Every token's chain of a flat table is the respaced DDPM (DDIM) chain, field by field bitwise; sampled per
    token it gives the per-image sampler's images (to XLA's rounding: the same arithmetic, coefficients gathered per
    pixel instead of broadcast; 1 ulp seen, 5e-6 after DDIM's steps carry it) and exactly the images of the stacked
    respaced chain; no-op rows appended change no bit."""
    keys = jax.random.split(jax.random.key(0), 3)
    x_init = jax.random.normal(jax.random.key(1), (3, 8, 8, 2))
    params = jnp.linspace(0.5, 1.5, 2)
    for tau, eta in ((10, None), (10, 0.0), (20, 1.0)):
        grid = diffusion.respace(100, tau)
        ref = diffusion.ddpm_chain(100, grid) if eta is None else diffusion.ddim_chain(100, grid, eta)
        table = hs.flat(4, tau)
        mine = hs.chain(table, 100, eta=eta)
        for field in ("t", "sqrt_recip_ac", "sqrt_recipm1_ac", "c_x0", "c_xt", "noisy"):
            np.testing.assert_array_equal(getattr(mine, field), np.stack([getattr(ref, field)] * 4, 1), err_msg=field)
        noisy = np.asarray(ref.noisy) > 0  # the log-variance matters where noise is added
        np.testing.assert_array_equal(np.asarray(mine.log_var)[noisy], np.stack([ref.log_var] * 4, 1)[noisy])
        per_token = lambda c: diffusion.sample_chain(_tokens_eps(_eps), params, c, x_init, keys, tokens=TOKENS)
        got = per_token(mine)
        np.testing.assert_allclose(got, diffusion.sample_chain(_eps, params, ref, x_init, keys), atol=1e-5,
                                   err_msg=f"tau {tau}, eta {eta}")
        np.testing.assert_array_equal(got, per_token(diffusion.stack_chains([ref] * 4)))
        np.testing.assert_array_equal(per_token(hs.chain(table.padded(tau + 3), 100, eta=eta)), got)


def _random_table(rng, num_steps: int, num_tokens: int, tau: int) -> hs.Table:
    """Each token: a random start level in [1, tau], a random non-increasing path reaching 0 by the last step."""
    levels = np.zeros((num_steps + 1, num_tokens), np.int32)
    for k in range(num_tokens):
        drops = np.sort(rng.choice(num_steps, size=rng.integers(1, tau + 1), replace=False))
        start = len(drops)
        levels[:, k] = start - np.searchsorted(drops, np.arange(num_steps + 1) - 1, side="right")
    return hs.Table(levels, tau)


def _reference_row(tau: int, now: np.ndarray, nxt: np.ndarray, num_timesteps: int, eps: np.ndarray, x: np.ndarray,
                   noise: np.ndarray, tokens: np.ndarray, temperature: float) -> np.ndarray:
    """One row of per-token ancestral DDPM in float64 from levels `now` to `nxt` [K]: the respaced posterior between
    each token's two timesteps, a token left alone where its level does not change, `temperature` noise where it
    lands on clean."""
    ac = diffusion.linear_schedule_tables(num_timesteps)["alphas_cumprod"]
    ts = hs.timesteps(tau, num_timesteps)
    tok, new = tokens[..., 0], x.copy()
    for k in np.flatnonzero(now != nxt):
        t, t_prev = ts[now[k]], ts[nxt[k]]
        a_t, a_prev = ac[t], (ac[t_prev] if t_prev >= 0 else 1.0)
        beta = 1.0 - a_t / a_prev
        pix = (slice(None), tok == k)
        x0 = np.clip(x[pix] / np.sqrt(a_t) - np.sqrt(1.0 / a_t - 1.0) * eps[pix], -1, 1)
        mean = beta * np.sqrt(a_prev) / (1 - a_t) * x0 + (1 - a_prev) * np.sqrt(1 - beta) / (1 - a_t) * x[pix]
        sd = np.sqrt(beta * (1 - a_prev) / (1 - a_t)) if t_prev >= 0 else temperature
        new[pix] = mean + sd * noise[pix]
    return new


def _reference(table: hs.Table, num_timesteps: int, eps_np, x_init: np.ndarray, noises: list[np.ndarray],
               tokens: np.ndarray, temperature: float) -> np.ndarray:
    """Per-token ancestral DDPM straight from the level table in float64, row by row (`_reference_row`)."""
    ts = hs.timesteps(table.tau, num_timesteps)
    x = np.asarray(x_init, np.float64)
    for s in range(table.num_steps):
        x = _reference_row(table.tau, table.levels[s], table.levels[s + 1], num_timesteps,
                           eps_np(x, ts[table.levels[s]]), x, noises[s], tokens, temperature)
    return x


def test_a_numpy_reference_on_a_random_table_agrees():
    rng = np.random.default_rng(0)
    table = _random_table(rng, 12, 4, 6)
    params = jnp.linspace(0.5, 1.5, 2)
    per_token = _per_token_eps
    keys = jax.random.split(jax.random.key(2), 2)
    x_init = jax.random.normal(jax.random.key(3), (2, 8, 8, 2))
    c = hs.chain(table, 50, temperature=0.3)
    got = diffusion.sample_chain(per_token, params, c, x_init, keys, tokens=TOKENS)
    noises = [np.asarray(diffusion.per_token_normal(keys, jnp.broadcast_to(c.t[s], (2, 4)), TOKENS, (8, 8, 2)))
              for s in range(table.num_steps)]  # the sampler's noise source, replayed
    eps_np = lambda x, t_now: np.asarray(per_token(params, jnp.asarray(x, jnp.float32),
                                                   jnp.broadcast_to(jnp.asarray(t_now), (2, 4)), None), np.float64)
    want = _reference(table, 50, eps_np, np.asarray(x_init), noises, TOKENS, 0.3)
    np.testing.assert_allclose(got, want, atol=2e-4)


SIGMA = np.array([[1.0, 0.6, 0.36, 0.216], [0.6, 1.0, 0.6, 0.36], [0.36, 0.6, 1.0, 0.6], [0.216, 0.36, 0.6, 1.0]])


def _exact_eps(num_timesteps: int, sigma: np.ndarray):
    """E[eps | x_t] of Gaussian data N(0, sigma) over K scalar tokens at per-token timesteps t [b, K] (-1: clean)."""
    ac = jnp.asarray(diffusion.linear_schedule_tables(num_timesteps)["alphas_cumprod"], jnp.float32)
    sigma = jnp.asarray(sigma, jnp.float32)

    def eps(params, x, t, cond):  # x [b, K, 1]; every example at the same per-token timesteps
        a = jnp.where(t[0] >= 0, ac[jnp.maximum(t[0], 0)], 1.0)
        da, ds = jnp.sqrt(a), jnp.sqrt(1.0 - a)
        cov = da[:, None] * sigma * da[None] + jnp.diag(ds**2)
        return (ds[None] * jnp.linalg.solve(cov, x[..., 0].T).T)[..., None]

    return eps


def _sample_cov(table: hs.Table, temperature=0.0, n: int = 4000, num_timesteps: int = 1000) -> np.ndarray:
    keys = jax.random.split(jax.random.key(7), n)
    x_init = diffusion.per_example_normal(keys, num_timesteps, (4, 1))
    c = hs.chain(table, num_timesteps, temperature=temperature)
    x = diffusion.sample_chain(_exact_eps(num_timesteps, SIGMA), None, c, x_init, keys, clip_x0=False,
                               tokens=np.arange(4).reshape(4, 1))
    return np.cov(np.asarray(x)[..., 0].T)


@pytest.mark.parametrize("table", [hs.flat(4, 1000), hs.blockwise(4, 500, 2)], ids=["flat", "blockwise"])
def test_flat_and_blockwise_schedules_reproduce_gaussian_data_with_the_exact_denoiser(table):
    """Stated tolerance 0.07 on every covariance entry: 4000 samples give a sampling error of about 0.02 per entry,
    and ancestral steps with the exact denoiser are not exact at finite step counts (0.04 seen at 1000 and 500
    steps per token, 0.08 at 200, 0.31 at 20)."""
    np.testing.assert_allclose(_sample_cov(table), SIGMA, atol=0.07)


def test_ar_with_the_conditional_std_as_temperature_is_exact_and_without_it_gives_the_mean():
    """One jump per token from pure noise (whose signal, alpha_bar 4e-5, is nearly none) lands on the conditional
    mean given the tokens before; the conditional standard deviation as terminal temperature makes it a draw from
    the conditional (0.03 seen, the sampling error), a wrong one does not (0.57 with temperature 1)."""
    cond_sd = np.array([1.0, 0.8, 0.8, 0.8])  # AR(1) with rho 0.6: sd of x_k given x_<k is sqrt(1 - 0.36)
    np.testing.assert_allclose(_sample_cov(hs.ar(4), cond_sd), SIGMA, atol=0.07)
    assert np.abs(_sample_cov(hs.ar(4), 1.0) - SIGMA).max() > 0.3
    mean_only = _sample_cov(hs.ar(4), 0.0)
    assert np.abs(mean_only).max() < 1e-3  # one jump with no temperature: the conditional mean of nothing, 0



def test_a_quadrant_table_with_an_adapter_around_as_unet_gives_as_images(preset, model_a_params, perturb):
    """Four block tokens one after another, each on A's respaced chain (`blockwise`, tau = A's budget), the noise
    keyed per (example, token, step) (`token_noise`: A's block keys), and an eps adapter that shows A's U-Net the
    first unsettled block as its target and the settled ones as its context: A's own images, at A's pass count.
    Tolerance 1e-3, not the design's 1e-5: the first step's inputs, eps and coefficients are bitwise A's, but
    x0 = 359 x - 359 eps (the top of a 20-step chain) cancels, XLA contracts it differently with per-pixel
    coefficients, and the perturbed U-Net carries that to 1.5e-4 by the last block (7e-4 at 5 steps, 0.03 on the
    test preset's 4-step chain, whose alpha_bar reaches 1e-9); another seed's noise differs by O(1)."""
    import dataclasses

    from hybrid_jax.generators import model_a

    cfg, g = dataclasses.replace(preset.model_a, num_timesteps=20), preset.geometry
    params = perturb(model_a_params, 0, 0.02)
    budget = 10
    keys = jax.random.split(jax.random.key(5), 2)
    want = model_a.make_sampler(cfg, budget, geometry=g).sample_keys(params, keys)
    table = hs.blockwise(g.num_blocks, budget, 1)
    assert table.passes == model_a.make_sampler(cfg, budget, geometry=g).passes
    tokens = diffusion.tile_tokens(g.image_size, g.image_size, g.block_size)
    unet = model_a.make_eps_fn(cfg)

    def adapter(p, x, t, cond):
        block = jnp.argmax(t[0] >= 0)  # blocks before it are settled (-1), it and those after are not
        channels = model_a.block_condition(x, jnp.full((x.shape[0],), block), g)
        return unet(p, x, t[:, block], (channels, None))

    x_init = hs.token_noise(tokens)(keys, jnp.full((2, g.num_blocks), cfg.timesteps), g.image_shape)
    got = hs.sample(adapter, params, table, cfg.timesteps, x_init, keys, tokens)
    np.testing.assert_allclose(jnp.clip(got, -1, 1), want, atol=1e-3)


def test_a_width_1_table_with_bs_temperature_and_an_adapter_around_bs_decoder_gives_bs_ar_patches(
        preset, model_b_params, perturb):
    """One jump per patch in raster order (`ar`, tau 1) with B's temperature as terminal noise, replaying B's AR key
    order, and an adapter that turns the decoder's predicted mean of each patch (teacher forcing on the settled
    ones) into the eps whose x0 it is: B's AR patches (1e-5), one pass per patch as B's AR loop."""
    from hybrid_jax.generators import model_b

    cfg, g = preset.model_b, preset.geometry
    params = perturb(model_b_params, 1)
    keys = jax.random.split(jax.random.key(6), 2)
    sampler = model_b.make_sampler(cfg, preset.corrector, geometry=g)
    want = sampler.ar_prefix(params, keys, g.num_patches).state.patches  # [b, N, P]
    table = hs.ar(g.num_patches)
    assert table.passes == g.num_patches
    decoder = model_b.make_decoder(cfg, geometry=g)
    sched = diffusion.linear_schedule(preset.corrector.num_timesteps)  # any T: one jump from T - 1 to clean
    T = sched.num_timesteps

    def adapter(p, x, t, cond):  # x [b, N, P]: settled patches, zeros where not yet drawn
        means = model_b.teacher_forcing(decoder, p["ar"], x)
        tt = jnp.maximum(t, 0)[..., None]
        return (sched.sqrt_recip_alphas_cumprod[tt] * x - means) / sched.sqrt_recipm1_alphas_cumprod[tt]

    def b_noise(keys_, t, shape):  # B's AR key order: patch i's noise from fold_in(fold_in(key, 0), i)
        ar_keys = jax.vmap(lambda k: jax.random.fold_in(k, 0))(keys_)
        return jax.vmap(lambda i: diffusion.per_example_normal(ar_keys, i, shape[1:]), out_axes=1)(
            jnp.arange(shape[0]))

    x_init = jnp.zeros((2, g.num_patches, g.patch_dim))
    got = hs.sample(adapter, params, table, T, x_init, keys, np.arange(g.num_patches)[:, None],
                    temperature=cfg.temperature, clip_x0=False, noise_fn=b_noise)
    np.testing.assert_allclose(got, want, atol=1e-5)


@pytest.mark.parametrize("delay", [1, 2])
def test_a_window_covers_every_token_a_row_moves_or_reads_and_caches_only_final_ones(delay):
    """`Window.plan`: in every row, the tokens before the window were clean by row s - 1 - delay (final, their keys
    and values from an earlier pass that saw them so), the tokens after it wait at pure noise, and the size is the
    smallest that does this; blockwise in A's order it is the last block and the current one, AR (width 1) the
    last `delay` tokens and the current one."""
    rng = np.random.default_rng(delay)
    for table in (_random_table(rng, 12, 6, 4), hs.blockwise(16, 3, 4, ORDER16), hs.ar(16), hs.slide(16, 4, 2)):
        order = rng.permutation(table.num_tokens) if table.num_tokens == 6 else ORDER16
        w = hs.Window.plan(table, order, delay)
        lv = table.levels[:, w.order]
        clean_after = np.where(lv[0] == 0, -1, np.argmax(lv[1:] == 0, axis=0))
        need = []
        for s in range(table.num_steps):
            before, after = slice(0, w.start[s]), slice(w.start[s] + w.size, None)
            assert (clean_after[before] <= s - 1 - delay).all()
            assert ((lv[s, after] == table.tau) & (lv[s + 1, after] == table.tau)).all()
            moving = np.flatnonzero(~((lv[s] == table.tau) & (lv[s + 1] == table.tau)))  # the row reads or moves
            need.append(moving.max() + 1 - np.argmin(np.append(clean_after <= s - 1 - delay, False)))
        assert w.size == max(1, max(need)) and 0 <= w.start.min() and w.start.max() + w.size <= table.num_tokens
    assert hs.Window.plan(hs.blockwise(16, 3, 4, ORDER16), ORDER16, 1).size == 8
    assert hs.Window.plan(hs.ar(16), np.arange(16), delay).size == 1 + delay
    with pytest.raises(ConfigError, match="unit order over the 16 tokens"):
        hs.Window.plan(hs.ar(16), np.arange(15), 1)


def test_the_table_sampler_is_the_per_token_chain_sampler_and_acs_with_k_0_changes_nothing():
    """`sample`'s own scan over rows = `diffusion.sample_chain` on the table's chain with the same noise, bitwise;
    ACS with k = 0 (any window and level) is that sampler, bitwise, and costs no pass."""
    rng = np.random.default_rng(1)
    table = _random_table(rng, 10, 4, 5)
    keys = jax.random.split(jax.random.key(8), 2)
    x_init = jax.random.normal(jax.random.key(9), (2, 8, 8, 2))
    params = jnp.linspace(0.5, 1.5, 2)
    eps = _tokens_eps(_eps)
    want = diffusion.sample_chain(eps, params, hs.chain(table, 50), x_init, keys, tokens=TOKENS,
                                  noise_fn=hs.token_noise(TOKENS))
    np.testing.assert_array_equal(hs.sample(eps, params, table, 50, x_init, keys, TOKENS), want)
    acs0 = hs.ACS(0, level=3, window=4)
    np.testing.assert_array_equal(hs.sample(eps, params, table, 50, x_init, keys, TOKENS, acs=acs0), want)
    assert acs0.passes(table) == 0 and hs.ACS(1, 3, 4).passes(table) > 0


def test_acs_re_noises_the_uncommitted_tokens_and_replaces_the_k_worst_by_their_re_read():
    """ACS against a NumPy reference of its rule on a random table: after each row, the tokens settled within the
    window are re-noised to the ACS level's timestep (noise keyed at step T + 1 + row), re-read in one pass (the
    others at their timesteps after the row), and the k with the largest mean squared gap between re-read clean
    estimate and value take that estimate; the candidates follow the window; one pass per row with a candidate."""
    table = hs.ar(4, tau=2)
    acs = hs.ACS(2, level=2, window=2)
    np.testing.assert_array_equal(acs.candidates(table), np.array(  # rows 1-2 token 0, 3-4 token 1, ...
        [[0, 0, 0, 0], [1, 0, 0, 0], [1, 0, 0, 0], [0, 1, 0, 0], [0, 1, 0, 0], [0, 0, 1, 0], [0, 0, 1, 0],
         [0, 0, 0, 1]], bool))
    assert acs.passes(table) == 7 and hs.ACS(1, 2, window=3).passes(table) == 7
    rng = np.random.default_rng(3)
    table = _random_table(rng, 10, 4, 4)
    for acs in (hs.ACS(1, level=3, window=2), hs.ACS(2, level=4, window=3)):
        params = jnp.linspace(0.5, 1.5, 2)
        per_token = _per_token_eps
        keys = jax.random.split(jax.random.key(12), 2)
        x_init = jax.random.normal(jax.random.key(13), (2, 8, 8, 2))
        got = hs.sample(per_token, params, table, 50, x_init, keys, TOKENS, acs=acs)
        eps_np = lambda x, t: np.asarray(per_token(params, jnp.asarray(x, jnp.float32), jnp.asarray(t), None),
                                         np.float64)
        want = _reference_acs(table, acs, 50, eps_np, np.asarray(x_init), keys)
        np.testing.assert_allclose(got, want, atol=2e-4)
        plain = hs.sample(per_token, params, table, 50, x_init, keys, TOKENS)
        assert np.abs(np.asarray(got) - np.asarray(plain)).max() > 1e-2  # it corrected something




def _reference_acs(table: hs.Table, acs: hs.ACS, T: int, eps_np, x_init: np.ndarray, keys) -> np.ndarray:
    """The sampler with ACS in float64, row by row: the plain per-token step (`_reference`'s rule, token_noise
    replayed), then ACS's rule written out."""
    ac = diffusion.linear_schedule_tables(T)["alphas_cumprod"]
    ts = hs.timesteps(table.tau, T)
    noise = hs.token_noise(TOKENS)
    tok, b = TOKENS[..., 0], x_init.shape[0]
    cand = acs.candidates(table)
    x = np.asarray(x_init, np.float64)
    for s in range(table.num_steps):
        t_now = np.broadcast_to(ts[table.levels[s]], (b, 4))
        z = np.asarray(noise(keys, jnp.asarray(t_now), x.shape[1:]), np.float64)
        x = _reference_row(table.tau, table.levels[s], table.levels[s + 1], T, eps_np(x, t_now), x, z, TOKENS, 0.0)
        if not cand[s].any():
            continue
        t_c = ts[acs.level]
        z = np.asarray(noise(keys, jnp.full((b, 4), T + 1 + s), x.shape[1:]), np.float64)
        pix = cand[s][tok]  # [8, 8]
        x_c = np.where(pix[None, ..., None], np.sqrt(ac[t_c]) * x + np.sqrt(1 - ac[t_c]) * z, x)
        t_eval = np.broadcast_to(np.where(cand[s], t_c, ts[table.levels[s + 1]]), (b, 4))
        x0 = np.clip(x_c / np.sqrt(ac[t_c]) - np.sqrt(1 / ac[t_c] - 1) * eps_np(x_c, t_eval), -1, 1)
        gap = np.stack([((x0 - x) ** 2)[:, tok == k].mean(axis=(1, 2)) for k in range(4)], 1)
        gap = np.where(cand[s], gap, -np.inf)
        for i in range(b):
            worst = np.argsort(-gap[i], kind="stable")[: acs.k]
            for k in worst:
                if np.isfinite(gap[i, k]):
                    x[i][tok == k] = x0[i][tok == k]
    return x
