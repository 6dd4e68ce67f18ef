"""DDPM core (Ho et al. 2020): schedule, forward noising, losses, reverse steps, scan sampler.

Everything is a pure function of arrays; the schedule is a pytree of f32 tables that the
sampler indexes by timestep (no `lax.cond` on t), so the network may run in bf16 while
the sampler's arithmetic stays in f32.
"""

from __future__ import annotations

from typing import Any, Callable

import chex
import flax
import jax
import jax.numpy as jnp
import numpy as np

EpsFn = Callable[[Any, jax.Array, jax.Array, Any], jax.Array]  # (params, x_t, t[b], cond) -> eps


@flax.struct.dataclass
class Schedule:
    """Precomputed f32 tables, each [T]."""

    betas: jax.Array
    alphas_cumprod: jax.Array
    alphas_cumprod_prev: jax.Array
    sqrt_alphas_cumprod: jax.Array
    sqrt_one_minus_alphas_cumprod: jax.Array
    sqrt_recip_alphas_cumprod: jax.Array
    sqrt_recipm1_alphas_cumprod: jax.Array
    posterior_variance: jax.Array
    posterior_log_variance_clipped: jax.Array
    posterior_mean_coef1: jax.Array
    posterior_mean_coef2: jax.Array

    @property
    def num_timesteps(self) -> int:
        return self.betas.shape[0]


def linear_betas(num_timesteps: int) -> np.ndarray:
    """Ho et al.'s 1e-4..0.02 over 1000 steps, rescaled by 1000/T for T steps (capped below 1)."""
    scale = 1000.0 / num_timesteps
    return np.clip(np.linspace(scale * 1e-4, scale * 0.02, num_timesteps, dtype=np.float64), 0.0, 0.999)


def linear_schedule(num_timesteps: int) -> Schedule:
    """All tables computed in f64 NumPy, stored as f32."""
    return Schedule(**{k: jnp.asarray(v, jnp.float32) for k, v in linear_schedule_tables(num_timesteps).items()})


def linear_schedule_tables(num_timesteps: int) -> dict[str, np.ndarray]:
    """The f64 tables of `Schedule` for the linear schedule."""
    betas = linear_betas(num_timesteps)
    ac = np.cumprod(1.0 - betas)
    ac_prev = np.append(1.0, ac[:-1])
    post_var = betas * (1.0 - ac_prev) / (1.0 - ac)
    tables = dict(
        betas=betas,
        alphas_cumprod=ac,
        alphas_cumprod_prev=ac_prev,
        sqrt_alphas_cumprod=np.sqrt(ac),
        sqrt_one_minus_alphas_cumprod=np.sqrt(1.0 - ac),
        sqrt_recip_alphas_cumprod=np.sqrt(1.0 / ac),
        sqrt_recipm1_alphas_cumprod=np.sqrt(1.0 / ac - 1.0),
        posterior_variance=post_var,
        posterior_log_variance_clipped=np.log(np.append(post_var[1], post_var[1:]) if num_timesteps > 1
                                              else np.maximum(post_var, 1e-20)),
        posterior_mean_coef1=betas * np.sqrt(ac_prev) / (1.0 - ac),
        posterior_mean_coef2=(1.0 - ac_prev) * np.sqrt(1.0 - betas) / (1.0 - ac),
    )
    return tables


def _bcast(v: jax.Array, x: jax.Array) -> jax.Array:
    """[b] -> [b, 1, 1, ...] to broadcast against x."""
    return v.reshape(v.shape + (1,) * (x.ndim - v.ndim))


def _at(table: jax.Array, t: jax.Array, x: jax.Array) -> jax.Array:
    """table[t] broadcast against x."""
    return _bcast(table[t], x)


def q_sample(sched: Schedule, x0: jax.Array, t: jax.Array, noise: jax.Array) -> jax.Array:
    """Sample x_t ~ q(x_t | x_0) = N(sqrt(a_bar) x0, (1 - a_bar) I)."""
    return _at(sched.sqrt_alphas_cumprod, t, x0) * x0 + _at(sched.sqrt_one_minus_alphas_cumprod, t, x0) * noise


def eps_loss(eps_pred: jax.Array, eps: jax.Array, mask: jax.Array | None = None,
             weights: jax.Array | None = None) -> jax.Array:
    """Mean squared error on epsilon, over the pixels where `mask` is 1 (all if None), each example's pixels
    weighted by `weights` [b] (`min_snr_weights`; 1 if None)."""
    sq = jnp.square(eps_pred.astype(jnp.float32) - eps)
    if weights is not None:
        sq = sq * _bcast(weights.astype(jnp.float32), sq)
    if mask is None:
        return jnp.mean(sq)
    mask = jnp.broadcast_to(mask, sq.shape)
    return jnp.sum(sq * mask) / jnp.maximum(jnp.sum(mask), 1.0)


def min_snr_weights(sched: Schedule, t: jax.Array, gamma: float) -> jax.Array | None:
    """[b] min-SNR-gamma weights of epsilon-MSE (Hang et al. 2023): min(SNR_t, gamma) / SNR_t, SNR_t = a_bar /
    (1 - a_bar). They damp the many low-noise steps whose epsilon is easy and whose samples gain little;
    gamma = 0 is no weighting (None)."""
    if gamma <= 0:
        return None
    a_bar = sched.alphas_cumprod[t]
    snr = a_bar / (1.0 - a_bar)
    return jnp.minimum(snr, gamma) / snr


def predict_x0(sched: Schedule, x_t: jax.Array, t: jax.Array, eps: jax.Array) -> jax.Array:
    return _at(sched.sqrt_recip_alphas_cumprod, t, x_t) * x_t - _at(sched.sqrt_recipm1_alphas_cumprod, t, x_t) * eps


def q_posterior(sched: Schedule, x0: jax.Array, x_t: jax.Array, t: jax.Array):
    """Mean, variance and clipped log-variance of q(x_{t-1} | x_t, x_0)."""
    mean = _at(sched.posterior_mean_coef1, t, x_t) * x0 + _at(sched.posterior_mean_coef2, t, x_t) * x_t
    return mean, _at(sched.posterior_variance, t, x_t), _at(sched.posterior_log_variance_clipped, t, x_t)


def ddpm_step(sched: Schedule, x_t, t, eps, noise, clip_x0: bool = True):
    """One ancestral step x_t -> x_{t-1}; no noise is added at t = 0."""
    x0 = predict_x0(sched, x_t, t, eps)
    if clip_x0:
        x0 = jnp.clip(x0, -1.0, 1.0)
    mean, _, log_var = q_posterior(sched, x0, x_t, t)
    nonzero = _bcast((t > 0).astype(x_t.dtype), x_t)
    return mean + nonzero * jnp.exp(0.5 * log_var) * noise


def ddim_step(sched: Schedule, x_t, t, t_prev, eps, noise=None, eta: float = 0.0, clip_x0: bool = True):
    """One DDIM step x_t -> x_{t_prev} (Song et al. 2021); t_prev < 0 means the clean image."""
    x0 = predict_x0(sched, x_t, t, eps)
    if clip_x0:
        x0 = jnp.clip(x0, -1.0, 1.0)
    eps = (_at(sched.sqrt_recip_alphas_cumprod, t, x_t) * x_t - x0) / _at(sched.sqrt_recipm1_alphas_cumprod, t, x_t)
    a_t = _at(sched.alphas_cumprod, t, x_t)
    a_prev = jnp.where(t_prev >= 0, sched.alphas_cumprod[jnp.maximum(t_prev, 0)], 1.0)
    a_prev = _bcast(a_prev, x_t)
    sigma = eta * jnp.sqrt((1 - a_prev) / (1 - a_t) * (1 - a_t / a_prev))
    out = jnp.sqrt(a_prev) * x0 + jnp.sqrt(jnp.maximum(1 - a_prev - sigma**2, 0.0)) * eps
    return out if noise is None else out + sigma * noise


def per_example_normal(keys: jax.Array, step, shape, dtype=jnp.float32) -> jax.Array:
    """Standard normal noise for each example from its own key folded with `step` (a scalar or one per example).

    An example's noise depends only on its key and its own step, never on the batch it sits in,
    so a seed gives the same image at any batch size or batch composition.
    """
    steps = jnp.broadcast_to(jnp.asarray(step, jnp.uint32), keys.shape)
    return jax.vmap(lambda k, t: jax.random.normal(jax.random.fold_in(k, t), shape, dtype))(keys, steps)


# ----------------------------------------------------------------------------- reverse chains (schedules as data)

@flax.struct.dataclass
class Chain:
    """A reverse chain as data: the timesteps it visits and each step's f32 coefficients, all [S].

    Step i sees x at timestep t[i], predicts x0 = sqrt_recip_ac x - sqrt_recipm1_ac eps (clipped),
    and lands on t[i + 1] (the last step on the clean image):
    x' = c_x0 x0 + c_xt x + noisy exp(log_var / 2) z, with z keyed on the example's own t[i].
    A respaced DDPM chain, a DDIM chain (any eta) and the full trained chain are all values of
    this one type, so one scan samples every step budget.
    """

    t: jax.Array  # [S] int32, network timesteps in visiting order (descending)
    sqrt_recip_ac: jax.Array  # [S]
    sqrt_recipm1_ac: jax.Array  # [S]
    c_x0: jax.Array  # [S]
    c_xt: jax.Array  # [S]
    log_var: jax.Array  # [S]
    noisy: jax.Array  # [S] 1.0 where noise is added, 0.0 where not (the last step, or eta = 0)

    @property
    def num_steps(self) -> int:
        return self.t.shape[0]

    def steps(self, start: int, stop: int | None = None) -> "Chain":
        """Steps start..stop-1: running chain.steps(0, p) then chain.steps(p) is running the chain."""
        return jax.tree.map(lambda v: v[start:stop], self)


def respace(num_timesteps: int, steps: int) -> np.ndarray:
    """`steps` timesteps of a T-step schedule, evenly spaced from T - 1 down to 0 (descending)."""
    if not 0 < steps <= num_timesteps:
        raise ValueError(f"a step budget must be in [1, {num_timesteps}], got {steps}")
    return np.round(np.linspace(num_timesteps - 1, 0, steps)).astype(np.int32)


def _visits(num_timesteps: int, timesteps) -> tuple[np.ndarray, np.ndarray]:
    t = np.asarray(timesteps, np.int64).reshape(-1)
    if len(t) == 0 or t[0] >= num_timesteps or t[-1] < 0 or np.any(np.diff(t) >= 0):
        raise ValueError(f"timesteps must be strictly decreasing within [0, {num_timesteps}), got {t.tolist()}")
    return t, np.append(t[1:], t[-1] - 1)  # (t, t_prev): the last step lands one below its own t


def ddpm_chain(num_timesteps: int, timesteps) -> Chain:
    """Ancestral DDPM over the visited timesteps (respaced: the Markov chain on those steps, Nichol &
    Dhariwal 2021). Where consecutive timesteps are visited the trained chain's tables are used as they
    are, so the full budget is bitwise today's sampler."""
    return ddpm_steps(num_timesteps, *_visits(num_timesteps, timesteps))


def ddpm_steps(num_timesteps: int, t: np.ndarray, t_prev: np.ndarray) -> Chain:
    """`ddpm_chain`'s steps from each t[i] to t_prev[i] (-1: the clean image), each on its own: the steps of a
    hyperschedule's tokens (`hybrid_jax.hyperschedule`)."""
    t, t_prev = np.asarray(t, np.int64), np.asarray(t_prev, np.int64)
    base = linear_schedule_tables(num_timesteps)
    ac = base["alphas_cumprod"]
    a_t, a_prev = ac[t], np.where(t_prev >= 0, ac[np.maximum(t_prev, 0)], 1.0)
    consecutive = t_prev == t - 1
    beta = np.where(consecutive, base["betas"][t], 1.0 - a_t / a_prev)
    var = beta * (1.0 - a_prev) / (1.0 - a_t)
    var_next = np.append(var[1:], var[-1])  # the clipped log-variance of the last step (no noise there)
    respaced = dict(c_x0=beta * np.sqrt(a_prev) / (1.0 - a_t), c_xt=(1.0 - a_prev) * np.sqrt(1.0 - beta) / (1.0 - a_t),
                    log_var=np.log(np.maximum(np.where(var > 0, var, var_next), 1e-30)))
    tables = {k: np.where(consecutive, base[b][t], respaced[k])
              for k, b in (("c_x0", "posterior_mean_coef1"), ("c_xt", "posterior_mean_coef2"),
                           ("log_var", "posterior_log_variance_clipped"))}
    return _chain(base, t, tables, noisy=t_prev >= 0)


def ddim_chain(num_timesteps: int, timesteps, eta: float = 0.0) -> Chain:
    """DDIM (Song et al. 2021) over the visited timesteps; eta = 0 is deterministic, eta = 1 equals
    respaced DDPM's posterior."""
    return ddim_steps(num_timesteps, *_visits(num_timesteps, timesteps), eta)


def ddim_steps(num_timesteps: int, t: np.ndarray, t_prev: np.ndarray, eta: float = 0.0) -> Chain:
    """`ddim_chain`'s steps from each t[i] to t_prev[i] (-1: the clean image), each on its own."""
    t, t_prev = np.asarray(t, np.int64), np.asarray(t_prev, np.int64)
    base = linear_schedule_tables(num_timesteps)
    ac = base["alphas_cumprod"]
    a_t, a_prev = ac[t], np.where(t_prev >= 0, ac[np.maximum(t_prev, 0)], 1.0)
    sigma2 = eta**2 * (1.0 - a_prev) / (1.0 - a_t) * (1.0 - a_t / a_prev)
    direction = np.sqrt(np.maximum(1.0 - a_prev - sigma2, 0.0)) / np.sqrt(1.0 / a_t - 1.0)  # times eps'
    tables = dict(c_x0=np.sqrt(a_prev) - direction, c_xt=direction * np.sqrt(1.0 / a_t),
                  log_var=np.log(np.maximum(sigma2, 1e-30)))
    return _chain(base, t, tables, noisy=(t_prev >= 0) & (sigma2 > 0))


def _chain(base: dict, t: np.ndarray, tables: dict, noisy: np.ndarray) -> Chain:
    f32 = lambda a: jnp.asarray(np.asarray(a, np.float64), jnp.float32)
    return Chain(t=jnp.asarray(t, jnp.int32), sqrt_recip_ac=f32(base["sqrt_recip_alphas_cumprod"][t]),
                 sqrt_recipm1_ac=f32(base["sqrt_recipm1_alphas_cumprod"][t]),
                 **{k: f32(v) for k, v in tables.items()}, noisy=f32(noisy))


def tile_tokens(height: int, width: int, tile: int) -> np.ndarray:
    """[height, width, 1] int32 token index of each pixel: tiles of tile x tile in raster order (blocks, patches)."""
    rows, cols = np.indices((height, width)) // tile
    return (rows * (width // tile) + cols).astype(np.int32)[..., None]


def stack_chains(chains) -> Chain:
    """A per-token chain: one chain per token (equal step counts), each field [S, K]; `sample_chain` with a
    token map then runs token k on its own timesteps."""
    if len({c.num_steps for c in chains}) != 1:
        raise ValueError(f"per-token chains need equal step counts, got {[c.num_steps for c in chains]}")
    return jax.tree.map(lambda *v: jnp.stack(v, axis=-1), *chains)


def per_token_normal(keys: jax.Array, t: jax.Array, tokens: jax.Array, shape) -> jax.Array:
    """Noise [b, *shape] whose pixels of token k are `per_example_normal(keys, t[:, k], shape)`'s: each token's
    noise is keyed on its own timestep, so equal timesteps give exactly the per-image noise."""
    draws = jax.vmap(lambda tk: per_example_normal(keys, tk, shape), out_axes=1)(t.T)  # [b, K, *shape]
    idx = jnp.broadcast_to(jnp.asarray(tokens)[None, None], (draws.shape[0], 1, *shape))
    return jnp.take_along_axis(draws, idx, axis=1)[:, 0]


def chain_step(c: Chain, i, x_t: jax.Array, eps: jax.Array, noise: jax.Array, clip_x0: bool = True,
               tokens: jax.Array | None = None) -> tuple[jax.Array, jax.Array]:
    """Step i of chain c: x at c.t[i] -> (x at the next visited timestep, the predicted x0), the arithmetic of
    `ddpm_step`. With a token map [*x.shape[1:-1], 1] the chain is per token (fields [S, K]) and each pixel
    takes its token's coefficients."""
    if tokens is None:
        at = lambda v: _bcast(jnp.broadcast_to(v[i], x_t.shape[:1]), x_t)
    else:
        at = lambda v: v[i][jnp.asarray(tokens)][None]
    x0 = at(c.sqrt_recip_ac) * x_t - at(c.sqrt_recipm1_ac) * eps
    if clip_x0:
        x0 = jnp.clip(x0, -1.0, 1.0)
    mean = at(c.c_x0) * x0 + at(c.c_xt) * x_t
    return mean + at(c.noisy) * jnp.exp(0.5 * at(c.log_var)) * noise, x0


def sample_chain(eps_fn: EpsFn, params, chain: Chain, x_init: jax.Array, keys: jax.Array, *, cond: Any = None,
                 unroll: int = 1, clip_x0: bool = True, tokens: np.ndarray | None = None, trace: bool = False,
                 noise_fn: Callable | None = None, has_aux: bool = False):
    """Run every step of `chain` from x_init (x at chain.t[0]); eps_fn is called once per step with each
    example's timestep [b] (per token: [b, K], with `tokens` the pixel -> token map of `tile_tokens` and
    chain fields [S, K]), and each example's (token's) noise is keyed on its own timestep (`noise_fn(keys, t,
    shape)` -> [b, *shape] replaces that key order: `hyperschedule.token_noise`).
    Returns x, or with `trace` (x, the predicted x0 of every step [S, b, ...]); with `has_aux` eps_fn returns (eps,
    aux) and the trace is (x, x0s, every step's aux stacked)."""
    b = x_init.shape[0]
    if tokens is not None:
        chex.assert_rank(chain.t, 2)  # [S, K]: one chain per token
        chex.assert_shape(tokens, (*x_init.shape[1:-1], 1))

    def step(x, i):
        t = jnp.broadcast_to(chain.t[i], (b, *chain.t.shape[1:]))  # [b] or [b, K]
        eps, aux = eps_fn(params, x, t, cond) if has_aux else (eps_fn(params, x, t, cond), None)
        noise = (noise_fn(keys, t, x.shape[1:]) if noise_fn is not None
                 else per_example_normal(keys, t, x.shape[1:]) if tokens is None
                 else per_token_normal(keys, t, tokens, x.shape[1:]))
        x, x0 = chain_step(chain, i, x, eps.astype(jnp.float32), noise, clip_x0, tokens)
        return x, ((x0, aux) if trace else None)

    x, out = jax.lax.scan(step, x_init.astype(jnp.float32), jnp.arange(chain.num_steps), unroll=unroll)
    return ((x, *out) if has_aux else (x, out[0])) if trace else x


def sample_loop(eps_fn: EpsFn, params, sched: Schedule, x_init: jax.Array, keys: jax.Array, *,
                start: int, num_steps: int, cond: Any = None, unroll: int = 1, clip_x0: bool = True) -> jax.Array:
    """Run `num_steps` consecutive ancestral steps from timestep `start - 1` down to `start - num_steps`.

    `x_init` [b, ...] is x_{start} (pure noise when start = T); `keys` [b] are per-example
    keys, folded with each example's timestep for that step's noise.
    """
    if not 0 < num_steps <= start <= sched.num_timesteps:
        raise ValueError(f"need 0 < num_steps ({num_steps}) <= start ({start}) <= T ({sched.num_timesteps})")
    chain = ddpm_chain(sched.num_timesteps, np.arange(start - 1, start - num_steps - 1, -1))
    return sample_chain(eps_fn, params, chain, x_init, keys, cond=cond, unroll=unroll, clip_x0=clip_x0)
