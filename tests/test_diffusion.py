"""Tests of hybrid_jax.diffusion against the closed forms of Ho et al. 2020.

Every reference value is computed here, independently, in float64 NumPy; the library keeps
its tables and arithmetic in float32, so comparisons use a relative bound of 1e-6 on the
sizes of the terms that make up each value (the floating-point error bound of a short sum).
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from hybrid_jax import diffusion

TS = (10, 100, 200, 1000)
TOL = 1e-6


# ----------------------------------------------------------------------------- references (float64)


def ref_betas(T: int) -> np.ndarray:
    """Ho et al.: linear 1e-4..0.02 over 1000 steps; for T steps every beta is scaled by 1000/T.

    Betas are capped at 0.999 (documented in `linear_betas`), which only bites for tiny T.
    """
    return np.minimum(np.linspace(1e-4, 0.02, T) * (1000.0 / T), 0.999)


def ref_tables(T: int) -> dict[str, np.ndarray]:
    betas = ref_betas(T)
    alphas = 1.0 - betas
    ab = np.cumprod(alphas)
    ab_prev = np.concatenate([[1.0], ab[:-1]])
    post_var = betas * (1.0 - ab_prev) / (1.0 - ab)  # beta-tilde, eq. (7)
    return dict(
        betas=betas, alphas_cumprod=ab, alphas_cumprod_prev=ab_prev,
        sqrt_alphas_cumprod=np.sqrt(ab), sqrt_one_minus_alphas_cumprod=np.sqrt(1.0 - ab),
        sqrt_recip_alphas_cumprod=1.0 / np.sqrt(ab), sqrt_recipm1_alphas_cumprod=np.sqrt(1.0 / ab - 1.0),
        posterior_variance=post_var,
        # log of beta-tilde; at t = 0 (where beta-tilde = 0 and no noise is added) the value of t = 1
        posterior_log_variance_clipped=np.log(np.concatenate([[post_var[1]], post_var[1:]])),
        posterior_mean_coef1=betas * np.sqrt(ab_prev) / (1.0 - ab),  # eq. (7)
        posterior_mean_coef2=(1.0 - ab_prev) * np.sqrt(alphas) / (1.0 - ab),
    )


def bcast(v: np.ndarray, x: np.ndarray) -> np.ndarray:
    return v.reshape(v.shape + (1,) * (x.ndim - v.ndim))


def assert_within(got, ref, scale, tol: float = TOL):
    """|got - ref| <= tol * scale elementwise (scale: sum of |terms| making up ref)."""
    got, ref, scale = (np.asarray(a, np.float64) for a in (got, ref, scale))
    err = np.abs(got - ref)
    bound = tol * scale + 1e-30
    worst = np.max(err / bound)
    assert worst <= 1.0, f"max |err| / bound = {worst:.3g} (max err {err.max():.3g})"


def random_inputs(T: int, seed: int = 0, shape=(64, 4, 4, 3)):
    rng = np.random.default_rng([seed, T])
    x0 = rng.uniform(-1, 1, shape).astype(np.float32)
    x_t = rng.normal(size=shape).astype(np.float32)
    eps = rng.normal(size=shape).astype(np.float32)
    noise = rng.normal(size=shape).astype(np.float32)
    t = rng.integers(0, T, shape[0]).astype(np.int32)
    t[:3] = (0, 1, T - 1)  # always cover both ends
    return x0, x_t, eps, noise, t


# ----------------------------------------------------------------------------- schedule and forward process


@pytest.mark.parametrize("T", TS)
def test_schedule_tables_match_closed_form(T):
    sched = diffusion.linear_schedule(T)
    ref = ref_tables(T)
    assert sched.num_timesteps == T
    for name, want in ref.items():
        got = getattr(sched, name)
        assert got.dtype == jnp.float32 and got.shape == (T,), name
        assert_within(got, want, np.abs(want), tol=TOL)


def test_linear_betas_endpoints():
    np.testing.assert_allclose(diffusion.linear_betas(1000)[[0, -1]], [1e-4, 0.02], rtol=1e-12)
    np.testing.assert_allclose(diffusion.linear_betas(100)[[0, -1]], [1e-3, 0.2], rtol=1e-12)
    np.testing.assert_allclose(diffusion.linear_betas(200)[[0, -1]], [5e-4, 0.1], rtol=1e-12)
    assert diffusion.linear_betas(10).max() == pytest.approx(0.999)  # capped below 1


@pytest.mark.parametrize("T", TS)
def test_q_sample_matches_closed_form(T):
    sched = diffusion.linear_schedule(T)
    ref = ref_tables(T)
    x0, _, _, noise, t = random_inputs(T)
    got = diffusion.q_sample(sched, jnp.asarray(x0), jnp.asarray(t), jnp.asarray(noise))
    a, b = bcast(ref["sqrt_alphas_cumprod"][t], x0), bcast(ref["sqrt_one_minus_alphas_cumprod"][t], x0)
    assert_within(got, a * x0 + b * noise, np.abs(a * x0) + np.abs(b * noise))


@pytest.mark.parametrize("T", TS)
def test_q_posterior_matches_closed_form(T):
    sched = diffusion.linear_schedule(T)
    ref = ref_tables(T)
    x0, x_t, _, _, t = random_inputs(T)
    mean, var, log_var = diffusion.q_posterior(sched, jnp.asarray(x0), jnp.asarray(x_t), jnp.asarray(t))
    c1, c2 = bcast(ref["posterior_mean_coef1"][t], x0), bcast(ref["posterior_mean_coef2"][t], x0)
    assert_within(mean, c1 * x0 + c2 * x_t, np.abs(c1 * x0) + np.abs(c2 * x_t))
    pv = ref["posterior_variance"][t]
    assert var.shape == (len(t), 1, 1, 1)
    assert_within(var[:, 0, 0, 0], pv, pv)
    # log-variance: log(beta-tilde_t) for t >= 1, the t = 1 value at t = 0 (where beta-tilde is 0)
    want_lv = np.log(ref["posterior_variance"][np.maximum(t, 1)])
    assert_within(log_var[:, 0, 0, 0], want_lv, np.abs(want_lv))
    assert np.all(np.asarray(var[t == 0]) == 0.0)


@pytest.mark.parametrize("clip_x0", [False, True])
@pytest.mark.parametrize("T", TS)
def test_ddpm_step_matches_closed_form(T, clip_x0):
    sched = diffusion.linear_schedule(T)
    ref = ref_tables(T)
    _, x_t, eps, noise, t = random_inputs(T, seed=1)
    got = diffusion.ddpm_step(sched, jnp.asarray(x_t), jnp.asarray(t), jnp.asarray(eps), jnp.asarray(noise),
                              clip_x0=clip_x0)
    at = lambda name: bcast(ref[name][t], x_t)
    # eq. (15) for x0, eq. (7) for the posterior, sigma_t^2 = beta-tilde_t, no noise at t = 0
    x0_terms = (at("sqrt_recip_alphas_cumprod") * x_t, at("sqrt_recipm1_alphas_cumprod") * eps)
    x0 = x0_terms[0] - x0_terms[1]
    if clip_x0:
        x0 = np.clip(x0, -1.0, 1.0)
    sigma = np.sqrt(at("posterior_variance")) * bcast((t > 0).astype(np.float64), x_t)
    want = at("posterior_mean_coef1") * x0 + at("posterior_mean_coef2") * x_t + sigma * noise
    scale = (at("posterior_mean_coef1") * (np.abs(x0_terms[0]) + np.abs(x0_terms[1]))
             + np.abs(at("posterior_mean_coef2") * x_t) + np.abs(sigma * noise))
    assert_within(got, want, scale, tol=2 * TOL)
    # at t = 0 the step is the posterior mean, noise-free
    assert np.any(t == 0)
    no_noise = diffusion.ddpm_step(sched, jnp.asarray(x_t), jnp.asarray(t), jnp.asarray(eps),
                                   jnp.zeros_like(jnp.asarray(noise)), clip_x0=clip_x0)
    np.testing.assert_array_equal(np.asarray(got)[t == 0], np.asarray(no_noise)[t == 0])


# ----------------------------------------------------------------------------- DDIM and the loss


@pytest.mark.parametrize("T", (100, 1000))
def test_ddim_eta0_with_exact_eps_of_point_mass_returns_the_point(T):
    sched = diffusion.linear_schedule(T)
    rng = np.random.default_rng(T)
    c = jnp.asarray(rng.uniform(-0.9, 0.9, (8, 4, 4, 3)).astype(np.float32))
    # exact eps for x0 = c (point mass): eps = (x_t - sqrt(ab) c) / sqrt(1 - ab)
    exact_eps = lambda x, t: ((x - diffusion._at(sched.sqrt_alphas_cumprod, t, x) * c)
                              / diffusion._at(sched.sqrt_one_minus_alphas_cumprod, t, x))

    # full deterministic chain T-1 -> ... -> 0 -> clean, with a few strided jumps in between
    ts = list(range(T - 1, T // 2, -T // 10)) + list(range(T // 2, -1, -1))
    x = jnp.asarray(rng.normal(size=c.shape).astype(np.float32))
    step = jax.jit(lambda x, tb, tpb: diffusion.ddim_step(sched, x, tb, tpb, exact_eps(x, tb), eta=0.0))
    for t, t_prev in zip(ts, ts[1:] + [-1]):
        tb, tpb = jnp.full((8,), t), jnp.full((8,), t_prev)
        x_next = step(x, tb, tpb)
        if t_prev >= 0:  # stays on the deterministic DDIM path of x0 = c
            ab_prev = float(ref_tables(T)["alphas_cumprod"][t_prev])
            want = np.sqrt(ab_prev) * np.asarray(c) + np.sqrt(1 - ab_prev) * np.asarray(exact_eps(x, tb))
            np.testing.assert_allclose(x_next, want, atol=5e-5)
        x = x_next
    np.testing.assert_allclose(x, c, atol=1e-5)

    # one jump from a moderately noisy x_t straight to the clean image
    tb = jnp.full((8,), T // 10)
    x_t = diffusion.q_sample(sched, c, tb, jnp.asarray(rng.normal(size=c.shape).astype(np.float32)))
    out = diffusion.ddim_step(sched, x_t, tb, jnp.full((8,), -1), exact_eps(x_t, tb), noise=jnp.ones_like(c))
    np.testing.assert_allclose(out, c, atol=1e-5)  # eta = 0: noise is ignored


def test_eps_loss_with_mask_is_mean_over_masked_pixels():
    rng = np.random.default_rng(0)
    pred = rng.normal(size=(3, 8, 8, 3)).astype(np.float32)
    eps = rng.normal(size=(3, 8, 8, 3)).astype(np.float32)
    mask = (rng.uniform(size=(3, 8, 8, 1)) < 0.3).astype(np.float32)
    sq = (pred.astype(np.float64) - eps) ** 2
    want = sq[np.broadcast_to(mask, sq.shape) > 0].mean()
    got = diffusion.eps_loss(jnp.asarray(pred), jnp.asarray(eps), jnp.asarray(mask))
    np.testing.assert_allclose(float(got), want, rtol=1e-6)
    np.testing.assert_allclose(float(diffusion.eps_loss(jnp.asarray(pred), jnp.asarray(eps))), sq.mean(), rtol=1e-6)
    # changing unmasked pixels does not change the loss
    pred2 = np.where(mask > 0, pred, pred + 100.0)
    assert float(diffusion.eps_loss(jnp.asarray(pred2), jnp.asarray(eps), jnp.asarray(mask))) == float(got)


# ----------------------------------------------------------------------------- the scan sampler


def gaussian_eps_fn(sched, mu, s):
    """Exact E[eps | x_t] for data x0 ~ N(mu, diag(s^2)).

    x_t ~ N(sqrt(ab) mu, ab s^2 + 1 - ab) and (x_t, eps) are jointly Gaussian with
    Cov(x_t, eps) = sqrt(1 - ab), so E[eps | x_t] = sqrt(1 - ab) (x_t - sqrt(ab) mu) / (ab s^2 + 1 - ab).
    """
    mu, s2 = jnp.asarray(mu, jnp.float32), jnp.asarray(s, jnp.float32) ** 2

    def eps_fn(params, x, t, cond):
        ab = diffusion._at(sched.alphas_cumprod, t, x)
        return jnp.sqrt(1 - ab) * (x - jnp.sqrt(ab) * mu) / (ab * s2 + 1 - ab)

    return eps_fn


def sampler_law(T: int, mu: np.ndarray, s: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Exact mean and variance of the output of T ancestral DDPM steps (float64).

    With the exact eps of a Gaussian target every step is affine in x_t plus Gaussian noise,
    x_{t-1} = M_t x_t + B_t + sigma_t z, so the law of x_0 follows by a scalar recursion.
    """
    r = ref_tables(T)
    m, v = np.zeros_like(mu), np.ones_like(mu)
    for t in range(T - 1, -1, -1):
        ab = r["alphas_cumprod"][t]
        d = ab * s**2 + 1 - ab
        a_x0 = (1 - (1 - ab) / d) / np.sqrt(ab)  # x0_hat = a_x0 x_t + b_x0
        b_x0 = (1 - ab) * mu / d
        c1, c2 = r["posterior_mean_coef1"][t], r["posterior_mean_coef2"][t]
        m_t = c1 * a_x0 + c2
        m, v = m_t * m + c1 * b_x0, m_t**2 * v + (r["posterior_variance"][t] if t > 0 else 0.0)
    return m, v


@pytest.mark.parametrize("T", (100, 1000))
def test_sample_loop_recovers_a_gaussian_target(T):
    """DDPM with the exact eps of N(mu, s^2) reproduces the target's mean and variance.

    Ancestral sampling with sigma_t^2 = beta-tilde is not exact for a finite T: each step drops
    c1^2 Var[x0 | x_t], so at T = 100 the variance of a narrow target comes out visibly small
    (about 0.64 s^2 for s = 0.1, 0.88 s^2 for s = 0.5; the gap closes as T grows). The test
    therefore checks the samples against (1) the exact law of the discrete sampler, computed
    by an independent float64 recursion, within sampling error, and (2) the target: the mean
    within sampling error at every T, the variance within sampling error at T = 1000 for
    s >= 0.3 and within the sampler's known shrinkage at T = 100.
    """
    n = 4000
    mu = np.array([0.3, -0.2, 0.5, 0.0, 0.1, -0.4])
    s = np.array([0.1, 0.2, 0.3, 0.5, 0.4, 0.6]) if T == 100 else np.array([0.3, 0.4, 0.5, 0.6, 0.7, 0.5])
    sched = diffusion.linear_schedule(T)
    keys = jax.random.split(jax.random.key(T), n)
    x_init = diffusion.per_example_normal(jax.random.split(jax.random.key(T + 1), n), 0, mu.shape)
    run = jax.jit(lambda x, k: diffusion.sample_loop(gaussian_eps_fn(sched, mu, s), None, sched, x, k,
                                                     start=T, num_steps=T, clip_x0=False))
    x = np.asarray(run(x_init, keys), np.float64)
    mean, var = x.mean(0), x.var(0, ddof=1)
    law_m, law_v = sampler_law(T, mu, s)

    se_mean = np.sqrt(law_v / n)
    se_var = np.sqrt(2.0 / (n - 1))  # relative standard error of a Gaussian sample variance
    assert np.all(np.abs(mean - law_m) < 4 * se_mean), (mean, law_m)
    assert np.all(np.abs(var / law_v - 1) < 4 * se_var), (var, law_v)
    # against the target itself
    assert np.all(np.abs(mean - mu) < 4 * se_mean), (mean, mu)
    if T == 1000:
        assert np.all(np.abs(var / s**2 - 1) < 4 * se_var), (var, s**2)
    else:
        assert np.all((var / s**2 > 0.55) & (var / s**2 < 1.0 + 4 * se_var)), var / s**2


def counting_eps_fn(inner, calls: list):
    """Wrap an eps_fn so that every call *at run time* appends its timestep to `calls`."""

    def eps_fn(params, x, t, cond):
        jax.debug.callback(lambda tt: calls.append(int(tt[0])), t, ordered=True)
        return inner(params, x, t, cond)

    return eps_fn


def test_sample_loop_calls_eps_once_per_step_under_jit():
    T = 100
    sched = diffusion.linear_schedule(T)
    inner = gaussian_eps_fn(sched, np.zeros(3), np.full(3, 0.5))
    keys = jax.random.split(jax.random.key(0), 5)
    x_init = jax.random.normal(jax.random.key(1), (5, 3))

    calls: list[int] = []
    run = jax.jit(lambda x, k: diffusion.sample_loop(counting_eps_fn(inner, calls), None, sched, x, k,
                                                     start=T, num_steps=T))
    run(x_init, keys).block_until_ready()
    jax.effects_barrier()
    assert calls == list(range(T - 1, -1, -1))
    calls.clear()
    run(x_init, keys).block_until_ready()  # cached executable: counted again at run time, not trace time
    jax.effects_barrier()
    assert len(calls) == T

    # corrector-style partial range: noised to step 30 of 100, 30 steps -> t = 29, 28, ..., 0
    calls.clear()
    part = jax.jit(lambda x, k: diffusion.sample_loop(counting_eps_fn(inner, calls), None, sched, x, k,
                                                      start=30, num_steps=30))
    part(x_init, keys).block_until_ready()
    jax.effects_barrier()
    assert calls == list(range(29, -1, -1))
    # a range that stops early: start=50, 20 steps -> t = 49..30
    calls.clear()
    jax.jit(lambda x, k: diffusion.sample_loop(counting_eps_fn(inner, calls), None, sched, x, k,
                                               start=50, num_steps=20))(x_init, keys).block_until_ready()
    jax.effects_barrier()
    assert calls == list(range(49, 29, -1))


def test_sample_loop_rejects_bad_ranges():
    sched = diffusion.linear_schedule(10)
    f = lambda p, x, t, c: x
    x, keys = jnp.zeros((1, 2)), jax.random.split(jax.random.key(0), 1)
    for start, num in ((11, 5), (5, 6), (5, 0)):
        with pytest.raises(ValueError, match="num_steps"):
            diffusion.sample_loop(f, None, sched, x, keys, start=start, num_steps=num)


def test_sample_loop_jit_and_vmap_match_the_batched_call():
    T = 50
    sched = diffusion.linear_schedule(T)
    eps_fn = gaussian_eps_fn(sched, np.array([0.2, -0.1, 0.0]), np.array([0.3, 0.4, 0.5]))
    n = 6
    keys = jax.random.split(jax.random.key(3), n)
    x_init = jax.random.normal(jax.random.key(4), (n, 3))
    loop = lambda x, k: diffusion.sample_loop(eps_fn, None, sched, x, k, start=T, num_steps=T)

    eager = loop(x_init, keys)
    batched = jax.jit(loop)(x_init, keys)
    one_by_one = jax.jit(jax.vmap(lambda x, k: loop(x[None], k[None])[0]))(x_init, keys)
    np.testing.assert_allclose(batched, eager, atol=1e-6)
    np.testing.assert_allclose(one_by_one, batched, atol=1e-6)
    # an example's result depends on its own key only, not on the batch it sits in
    np.testing.assert_allclose(jax.jit(loop)(x_init[2:3], keys[2:3])[0], batched[2], atol=1e-6)
    # and different keys give different samples
    assert not np.allclose(batched[0], batched[1])


# ----------------------------------------------------------------------------- chains: schedules as data

def _reference_chain(T: int, visit: np.ndarray, x: np.ndarray, keys, eps_np, eta: float | None) -> np.ndarray:
    """Independent float64 NumPy sampler over `visit`: eta None = respaced DDPM posterior, else DDIM(eta)."""
    ac = np.cumprod(1.0 - diffusion.linear_betas(T))
    x = np.asarray(x, np.float64)
    for i, t in enumerate(visit):
        t_prev = visit[i + 1] if i + 1 < len(visit) else t - 1
        a_t, a_prev = ac[t], (ac[t_prev] if t_prev >= 0 else 1.0)
        eps = eps_np(x, t)
        x0 = np.clip((x - np.sqrt(1 - a_t) * eps) / np.sqrt(a_t), -1, 1)
        z = np.asarray(diffusion.per_example_normal(keys, np.full(len(x), t), x.shape[1:]), np.float64)
        if eta is None:
            beta = 1 - a_t / a_prev
            mean = beta * np.sqrt(a_prev) / (1 - a_t) * x0 + (1 - a_prev) * np.sqrt(1 - beta) / (1 - a_t) * x
            var = beta * (1 - a_prev) / (1 - a_t)
        else:
            var = eta**2 * (1 - a_prev) / (1 - a_t) * (1 - a_t / a_prev)
            eps_hat = (x - np.sqrt(a_t) * x0) / np.sqrt(1 - a_t)
            mean = np.sqrt(a_prev) * x0 + np.sqrt(max(1 - a_prev - var, 0.0)) * eps_hat
        x = mean + (np.sqrt(var) * z if t_prev >= 0 else 0.0)
    return x


@pytest.mark.parametrize("T, budget", [(200, 200), (200, 50), (200, 10), (100, 7), (20, 1)])
@pytest.mark.parametrize("eta", [None, 0.0, 0.5, 1.0])
def test_respaced_chains_match_an_independent_numpy_sampler(T, budget, eta):
    W = np.array([[0.6, -0.2, 0.1], [0.3, 0.5, -0.4], [-0.1, 0.2, 0.7]])
    eps_np = lambda x, t: np.tanh(x @ W + t / T)
    eps_fn = lambda p, x, t, c: jnp.tanh(x @ jnp.asarray(W, jnp.float32) + t[:, None] / T)
    visit = diffusion.respace(T, budget)
    chain = diffusion.ddpm_chain(T, visit) if eta is None else diffusion.ddim_chain(T, visit, eta)
    keys = jax.random.split(jax.random.key(7), 6)
    x = np.asarray(jax.random.normal(jax.random.key(8), (6, 3)))
    got = jax.jit(lambda x, k: diffusion.sample_chain(eps_fn, None, chain, x, k))(x, keys)
    np.testing.assert_allclose(np.asarray(got), _reference_chain(T, visit, x, keys, eps_np, eta), atol=1e-5)


def test_respace_visits_evenly_from_the_top_to_zero():
    assert diffusion.respace(200, 200).tolist() == list(range(199, -1, -1))
    assert diffusion.respace(200, 5).tolist() == [199, 149, 100, 50, 0]
    assert diffusion.respace(10, 1).tolist() == [9]
    with pytest.raises(ValueError, match="budget"):
        diffusion.respace(10, 11)
    with pytest.raises(ValueError, match="strictly decreasing"):
        diffusion.ddpm_chain(10, [3, 5])


def test_full_chain_is_bitwise_the_trained_schedule():
    """The full budget's chain holds exactly the trained schedule's f32 tables (so today's images)."""
    T = 200
    sched, chain = diffusion.linear_schedule(T), diffusion.ddpm_chain(T, diffusion.respace(T, T))
    t = np.arange(T - 1, -1, -1)
    for ours, theirs in (("c_x0", "posterior_mean_coef1"), ("c_xt", "posterior_mean_coef2"),
                         ("log_var", "posterior_log_variance_clipped"), ("sqrt_recip_ac", "sqrt_recip_alphas_cumprod")):
        np.testing.assert_array_equal(np.asarray(getattr(chain, ours)), np.asarray(getattr(sched, theirs))[t])


def test_an_examples_noise_depends_on_its_own_timestep_only():
    keys = jax.random.split(jax.random.key(0), 4)
    mixed = diffusion.per_example_normal(keys, jnp.array([3, 3, 9, 9]), (5,))
    np.testing.assert_array_equal(mixed[:2], diffusion.per_example_normal(keys[:2], 3, (5,)))
    np.testing.assert_array_equal(mixed[2:], diffusion.per_example_normal(keys[2:], 9, (5,)))


# ----------------------------------------------------------------------------- per-token timesteps

def _per_pixel(t, tokens):
    """[b] or [b, K] timesteps -> [b, H, W, 1] (each pixel its token's)."""
    return t[:, None, None, None] if t.ndim == 1 else t[:, tokens[..., 0]][..., None]


@pytest.mark.parametrize("eta", [0.0, None])
def test_a_per_token_chain_with_equal_tokens_is_the_per_image_chain(eta):
    """Equal to f32 rounding (1e-6), not bitwise: XLA:CPU evaluates exp / tanh on a per-image chain's scalars
    but on a per-token chain's per-pixel tables (vectorised, an ulp apart). The noise is bitwise the same."""
    T, tokens = 50, diffusion.tile_tokens(8, 8, 4)  # 4 tokens of 4 x 4 pixels
    W = jnp.asarray([[0.6, -0.2, 0.1], [0.3, 0.5, -0.4], [-0.1, 0.2, 0.7]], jnp.float32)
    eps_fn = lambda p, x, t, c: jnp.tanh(x @ W + _per_pixel(t, tokens) / T)
    visit = diffusion.respace(T, 7)
    chain = diffusion.ddpm_chain(T, visit) if eta is None else diffusion.ddim_chain(T, visit, eta)
    keys = jax.random.split(jax.random.key(1), 3)
    x = jax.random.normal(jax.random.key(2), (3, 8, 8, 3))
    per_image = jax.jit(lambda x, k: diffusion.sample_chain(eps_fn, None, chain, x, k))(x, keys)
    per_token = jax.jit(lambda x, k: diffusion.sample_chain(eps_fn, None, diffusion.stack_chains([chain] * 4), x, k,
                                                            tokens=tokens))(x, keys)
    np.testing.assert_allclose(np.asarray(per_token), np.asarray(per_image), rtol=0, atol=1e-6)
    np.testing.assert_array_equal(diffusion.per_token_normal(keys, jnp.full((3, 4), 5), tokens, (8, 8, 3)),
                                  diffusion.per_example_normal(keys, 5, (8, 8, 3)))


@pytest.mark.parametrize("eta", [None, 0.5])
def test_each_token_follows_its_own_timesteps(eta):
    """Four tokens on four different 6-step schedules vs the NumPy sampler run once per schedule."""
    T, tokens = 60, diffusion.tile_tokens(8, 8, 4)
    W = np.array([[0.6, -0.2, 0.1], [0.3, 0.5, -0.4], [-0.1, 0.2, 0.7]])
    eps_np = lambda x, t: np.tanh(x @ W + t / T)  # pixelwise, so each token's pixels follow their own chain
    eps_fn = lambda p, x, t, c: jnp.tanh(x @ jnp.asarray(W, jnp.float32) + _per_pixel(t, tokens) / T)
    visits = [diffusion.respace(T, 6), diffusion.respace(40, 6), np.arange(5, -1, -1), diffusion.respace(T, 6) // 2]
    make = (lambda v: diffusion.ddpm_chain(T, v)) if eta is None else (lambda v: diffusion.ddim_chain(T, v, eta))
    chain = diffusion.stack_chains([make(v) for v in visits])
    keys = jax.random.split(jax.random.key(7), 3)
    x = np.asarray(jax.random.normal(jax.random.key(8), (3, 8, 8, 3)))
    got = np.asarray(jax.jit(lambda x, k: diffusion.sample_chain(eps_fn, None, chain, x, k, tokens=tokens))(x, keys))
    for k, v in enumerate(visits):
        ref = _reference_chain(T, v, x, keys, eps_np, eta)
        mask = tokens[..., 0] == k
        np.testing.assert_allclose(got[:, mask], ref[:, mask], atol=1e-5, err_msg=f"token {k}")
    assert not np.allclose(got[:, tokens[..., 0] == 0], _reference_chain(T, visits[1], x, keys, eps_np, eta)[:, tokens[..., 0] == 0])


def test_a_chain_split_anywhere_runs_the_same_steps():
    T = 30
    eps_fn = lambda p, x, t, c: jnp.tanh(x + t[:, None] / T)
    chain = diffusion.ddpm_chain(T, diffusion.respace(T, 9))
    keys = jax.random.split(jax.random.key(3), 4)
    x = jax.random.normal(jax.random.key(4), (4, 3))
    run = jax.jit(lambda c, x: diffusion.sample_chain(eps_fn, None, c, x, keys))
    whole = run(chain, x)
    for p in (1, 4, 8):
        np.testing.assert_array_equal(np.asarray(run(chain.steps(p), run(chain.steps(0, p), x))), np.asarray(whole))


def test_min_snr_weights_match_their_formula_and_weight_the_loss():
    sched = diffusion.linear_schedule(20)
    t = jnp.arange(20)
    a_bar = np.asarray(diffusion.linear_schedule(20).alphas_cumprod, np.float64)
    snr = a_bar / (1 - a_bar)
    np.testing.assert_allclose(diffusion.min_snr_weights(sched, t, 5.0), np.minimum(snr, 5.0) / snr, rtol=1e-5)
    assert diffusion.min_snr_weights(sched, t, 0.0) is None
    rng = np.random.default_rng(0)
    eps, pred = (jnp.asarray(rng.standard_normal((3, 4, 4, 3)), jnp.float32) for _ in range(2))
    w = jnp.asarray([0.5, 1.0, 2.0])
    per_example = np.mean((np.asarray(pred) - np.asarray(eps)) ** 2, axis=(1, 2, 3))
    assert float(diffusion.eps_loss(pred, eps, weights=w)) == pytest.approx(float(np.mean(per_example * w)), rel=1e-5)
