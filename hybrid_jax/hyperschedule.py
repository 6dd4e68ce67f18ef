"""Hyperschedules (arXiv 2504.06416, text only): a table of noise levels per token and step, in which plain
diffusion, blockwise diffusion (Model A) and an AR loop (Model B's) are special cases.

A table `levels` [S + 1, K] holds each token's level before the first step (row 0) and after each step: `tau` is
pure noise, 0 the clean (settled) token, levels in between are the `tau`-step respaced chain's timesteps
(`timesteps`). A token whose level does not change in a step is left exactly as it is (a no-op step), so padding
rows cost nothing but a shape, and one compiled sampler runs every table of that shape. `chain` turns a table into
`diffusion`'s per-token `Chain` (fields [S, K]) whose steps go, per token, from its level's timestep to the next
level's (DDPM, or DDIM with eta), with an optional terminal temperature (noise added where a token lands on clean:
B's AR sampling). `diffusion.sample_chain` with a token map then samples it, each token's noise keyed on its own
timestep (`sample`: per (example, token, step), `token_noise`): a flat table is the respaced sampler.

Builders (`flat`, `blockwise`, `ar`, `slide`) stagger groups of tokens in a unit order that is data (raster for
B's patches, quadrant-major for A's blocks). `sample` runs a table (or one per example: per-seed schedules in one
compiled shape) in one `lax.scan` with an optional adaptive correction (`ACS`): the source corrects discrete tokens
and is text only, so its Gaussian version here (re-noise the uncommitted tokens, re-read them, replace the k
furthest from their re-read) is our extrapolation. With a windowed `Net` each pass reads only its row's `Window` of
tokens after a key/value cache of the committed ones.
"""

from __future__ import annotations

import dataclasses
import functools
from typing import Any, Callable, Sequence

import chex
import flax
import jax
import jax.numpy as jnp
import numpy as np

from hybrid_jax import diffusion
from hybrid_jax.config import ConfigError


def check_levels(levels: np.ndarray, tau: int) -> None:
    """A ConfigError naming the first problem of a level table: its shape or type, a level outside [0, tau], a level
    that rises, or a token that never reaches 0 (a token may start below tau: partly noised, as B's corrector)."""
    levels = np.asarray(levels)
    if levels.ndim != 2 or levels.shape[0] < 2 or levels.shape[1] < 1:
        raise ConfigError(f"a hyperschedule is [steps + 1, tokens] levels with at least one step and one token, "
                          f"got shape {levels.shape}")
    if not np.issubdtype(levels.dtype, np.integer):
        raise ConfigError(f"hyperschedule levels must be integers, got {levels.dtype}")
    if tau < 1:
        raise ConfigError(f"a hyperschedule needs tau >= 1 noise levels, got {tau}")
    if (bad := np.argwhere((levels < 0) | (levels > tau))).size:
        s, k = bad[0]
        raise ConfigError(f"hyperschedule level {levels[s, k]} at step {s}, token {k} is outside [0, tau={tau}]")
    if (bad := np.argwhere(np.diff(levels, axis=0) > 0)).size:
        s, k = bad[0]
        raise ConfigError(f"hyperschedule level of token {k} rises from {levels[s, k]} to {levels[s + 1, k]} at step "
                          f"{s + 1}: levels may only fall")
    if (bad := np.flatnonzero(levels[-1] != 0)).size:
        raise ConfigError(f"hyperschedule token {bad[0]} ends at level {levels[-1, bad[0]]}, not 0: every token must "
                          "reach the clean level")


@dataclasses.dataclass(frozen=True)
class Table:
    """A checked level table (`check_levels`): levels [S + 1, K] from `tau` (pure noise) down to 0 (clean)."""

    levels: np.ndarray  # int32 [S + 1, K]
    tau: int

    def __post_init__(self):
        check_levels(self.levels, self.tau)
        object.__setattr__(self, "levels", np.asarray(self.levels, np.int32))

    @property
    def num_steps(self) -> int:
        return self.levels.shape[0] - 1

    @property
    def num_tokens(self) -> int:
        return self.levels.shape[1]

    @property
    def active(self) -> np.ndarray:
        """[S, K] bool: token k's level changes in step s (the network's output is used for it)."""
        return self.levels[1:] != self.levels[:-1]

    @property
    def passes(self) -> int:
        """Network passes of a sampler that skips no-op rows: the steps where some token is active."""
        return int(self.active.any(axis=1).sum())

    @property
    def token_passes(self) -> int:
        """Active (token, step) pairs: a windowed sampler's work in per-token units."""
        return int(self.active.sum())

    def padded(self, num_steps: int) -> "Table":
        """The same schedule with no-op rows appended up to `num_steps` steps (one compiled shape for several)."""
        if num_steps < self.num_steps:
            raise ConfigError(f"cannot pad a {self.num_steps}-step hyperschedule to {num_steps} steps")
        pad = np.repeat(self.levels[-1:], num_steps - self.num_steps, axis=0)
        return Table(np.concatenate([self.levels, pad]), self.tau)


def staggered(num_tokens: int, tau: int, group: int, delay: int, order: Sequence[int] | None = None) -> Table:
    """Tokens in groups of `group` consecutive units of `order` (a permutation of the tokens; None: 0..K-1); group g
    starts falling at step g x `delay` and falls one level per step from `tau` to 0."""
    order = np.arange(num_tokens) if order is None else np.asarray(order)
    if sorted(order.tolist()) != list(range(num_tokens)):
        raise ConfigError(f"a unit order must be a permutation of 0..{num_tokens - 1}, got {order.tolist()}")
    if group < 1 or num_tokens % group:
        raise ConfigError(f"a hyperschedule group of {group} tokens must divide the {num_tokens} tokens")
    if delay < 0:
        raise ConfigError(f"a hyperschedule delay must be >= 0, got {delay}")
    start = np.empty(num_tokens, np.int64)
    start[order] = (np.arange(num_tokens) // group) * delay  # each token's first step, by its position in `order`
    steps = int(start.max()) + tau
    s = np.arange(steps + 1)[:, None]
    return Table(np.clip(tau - (s - start[None]), 0, tau).astype(np.int32), tau)


def flat(num_tokens: int, tau: int) -> Table:
    """Plain diffusion: every token on the same `tau`-step chain."""
    return staggered(num_tokens, tau, num_tokens, 0)


def blockwise(num_tokens: int, tau: int, block: int, order: Sequence[int] | None = None) -> Table:
    """Blocks of `block` units of `order` one after another, each on its own `tau`-step chain (Model A's schedule
    with A's quadrant-major order)."""
    return staggered(num_tokens, tau, block, tau, order)


def ar(num_tokens: int, width: int = 1, tau: int = 1, order: Sequence[int] | None = None) -> Table:
    """AR: `width` units at a time, each from pure noise to clean in `tau` steps before the next start (tau = 1: one
    jump, the conditional mean, to which a terminal temperature adds noise: B's AR loop)."""
    return staggered(num_tokens, tau, width, tau, order)


def slide(num_tokens: int, tau: int, delay: int, order: Sequence[int] | None = None) -> Table:
    """Sliding diagonal ramp: unit i starts falling `delay` steps after unit i - 1 (0 < delay < tau: overlapping)."""
    return staggered(num_tokens, tau, 1, delay, order)


def timesteps(tau: int, num_timesteps: int) -> np.ndarray:
    """int32 [tau + 1]: the network timestep of each level; level 0 (clean) is -1, level tau is T - 1 (pure noise),
    levels between are `diffusion.respace(T, tau)`'s."""
    return np.concatenate([[-1], diffusion.respace(num_timesteps, tau)[::-1]]).astype(np.int32)


def chain(table: Table, num_timesteps: int, *, eta: float | None = None,
          temperature: float | Sequence[float] = 0.0) -> diffusion.Chain:
    """The per-token chain (fields [S, K]) of `table` on a `num_timesteps` schedule: step s of token k goes from its
    level's timestep to the next level's with the coefficients of `diffusion.ddpm_steps` (eta None) or
    `ddim_steps(eta)`, those of `ddpm_chain`/`ddim_chain`'s step between the same two timesteps; a no-op where its
    level does not change (x kept bitwise). `t` is each token's current timestep (-1: clean). `temperature` (one per
    token, or one for all): the standard deviation of noise added where a token lands on clean (no noise is added
    there otherwise)."""
    ts = timesteps(table.tau, num_timesteps)
    temp = np.broadcast_to(np.asarray(temperature, np.float64), (table.num_tokens,))
    fields = ("sqrt_recip_ac", "sqrt_recipm1_ac", "c_x0", "c_xt", "log_var", "noisy")
    noop = dict(sqrt_recip_ac=1.0, sqrt_recipm1_ac=0.0, c_x0=0.0, c_xt=1.0, log_var=0.0, noisy=0.0)
    pairs: dict[tuple[int, int], dict[str, float]] = {}
    out = {f: np.zeros((table.num_steps, table.num_tokens)) for f in fields}
    for s in range(table.num_steps):
        for k in range(table.num_tokens):
            now, nxt = table.levels[s, k], table.levels[s + 1, k]
            if now == nxt:
                values = noop
            else:
                key = (int(ts[now]), int(ts[nxt]))
                if key not in pairs:
                    with jax.ensure_compile_time_eval():  # constants, also while a caller's jit traces
                        c = (diffusion.ddpm_steps(num_timesteps, [key[0]], [key[1]]) if eta is None
                             else diffusion.ddim_steps(num_timesteps, [key[0]], [key[1]], eta))
                        pairs[key] = {f: float(np.asarray(getattr(c, f))[0]) for f in fields}
                values = dict(pairs[key])
                if nxt == 0 and temp[k] > 0:
                    values.update(noisy=1.0, log_var=2.0 * np.log(temp[k]))
            for f in fields:
                out[f][s, k] = values[f]
    return diffusion.Chain(t=jnp.asarray(ts[table.levels[:-1]], jnp.int32),
                           **{f: jnp.asarray(out[f], jnp.float32) for f in fields})


def token_noise(tokens: np.ndarray) -> Callable:
    """Noise keyed per (example, token, step) for `diffusion.sample_chain(noise_fn=...)`: token k of an example at
    timestep t draws from fold_in(fold_in(its key, k), t), over the pixels `tokens` [*shape[:-1], 1] maps to k.
    With quadrant tokens this is Model A's key order (a block's noise from its block key), so a blockwise table
    replays A's sampler; a token's noise depends on its own level alone, never on the other tokens' schedules."""
    tokens = np.asarray(tokens)
    num_tokens = int(tokens.max()) + 1

    def noise(keys: jax.Array, t: jax.Array, shape) -> jax.Array:
        def draw(k, tk):
            return diffusion.per_example_normal(jax.vmap(lambda key: jax.random.fold_in(key, k))(keys), tk, shape)

        draws = jax.vmap(draw, in_axes=(0, 1), out_axes=1)(jnp.arange(num_tokens), t)  # [b, K, *shape]
        idx = jnp.broadcast_to(jnp.asarray(tokens)[None, None], (draws.shape[0], 1, *shape))
        return jnp.take_along_axis(draws, idx, axis=1)[:, 0]

    return noise


@dataclasses.dataclass(frozen=True)
class ACS:
    """Adaptive correction, Gaussian version (our extrapolation: the source is text-only and corrects discrete
    tokens). After each row, the tokens settled in the last `window` rows (not yet committed: a KV cache would take
    them one window later, so a correction never invalidates it) are re-noised to `level` and re-read in one
    network pass; the `k` whose re-read clean estimate lies furthest from them (mean squared gap) take that estimate
    (denoised from `level` in one step). k = 0 changes nothing, bitwise."""

    k: int
    level: int  # the re-noising level (1..tau of the table)
    window: int = 1

    def __post_init__(self):
        if self.k < 0 or self.window < 1 or self.level < 1:
            raise ConfigError(f"ACS needs k >= 0, window >= 1 and level >= 1, got k={self.k}, window={self.window}, "
                              f"level={self.level}")

    def candidates(self, table: Table) -> np.ndarray:
        """[S, K] bool: token k may be corrected after row s (it reached level 0 within the last `window` rows)."""
        if self.level > table.tau:
            raise ConfigError(f"ACS level {self.level} is above the table's tau={table.tau}")
        settled = np.argmax(table.levels[1:] == 0, axis=0)  # the row after which each token is clean
        s = np.arange(table.num_steps)[:, None]
        return (settled[None] <= s) & (s < settled[None] + self.window)

    def passes(self, table: Table, start: int = 0, stop: int | None = None, score: bool = False) -> int:
        """Extra network passes in rows start..stop: one per row with a token to re-read (none when k = 0, unless
        the rows are only scored: `sample(score=True)`)."""
        return int(self.candidates(table)[start:stop].any(axis=1).sum()) if self.k or score else 0


@dataclasses.dataclass(frozen=True)
class Window:
    """Where a windowed sampler evaluates row s of a table: the `size` tokens of the unit order `order` from
    `start[s]`. The tokens before it are committed: settled, past ACS's reach (`delay` rows after settling, ACS's
    window), their keys and values taken from a pass that saw their final value and read from a cache; the tokens
    after it wait at pure noise (hidden: no token reads them). `plan` gives the smallest such window."""

    order: np.ndarray  # [K] the tokens in unit order
    size: int
    start: np.ndarray  # [S] int32
    delay: int = 1

    @staticmethod
    def plan(table: Table, order: Sequence[int], delay: int = 1, size: int | None = None) -> "Window":
        """The window of `table` in the unit order `order` whose tokens count as committed `delay` (>= 1) rows
        after they settle: a token clean after row r is final after row r + delay - 1 (its last ACS correction),
        its keys and values from the pass of row r + delay on, so it is committed from row r + delay + 1. `size`:
        a window of that size (a ConfigError if the table needs a larger one); None: the smallest."""
        order = np.asarray(order)
        if sorted(order.tolist()) != list(range(table.num_tokens)) or delay < 1:
            raise ConfigError(f"a window needs a unit order over the {table.num_tokens} tokens and delay >= 1, got "
                              f"{order.tolist()} and {delay}")
        lv = table.levels[:, order]  # [S + 1, K] in unit order
        clean_after = np.where(lv[0] == 0, -1, np.argmax(lv[1:] == 0, axis=0))  # the row after which it is clean
        s = np.arange(table.num_steps)[:, None]
        final = clean_after[None] <= s - 1 - delay  # [S, K]
        committed = np.argmin(np.concatenate([final, np.zeros_like(final[:, :1])], axis=1), axis=1)  # prefix length
        waiting = (lv[:-1] == table.tau) & (lv[1:] == table.tau)
        pos = np.arange(table.num_tokens)[None]
        last = np.max(np.where(~waiting, pos + 1, 0), axis=1)  # one past the last token a row needs
        need = int(max(1, np.max(last - committed)))
        if size is not None and need > size:
            raise ConfigError(f"this hyperschedule needs a window of {need} tokens, more than the sampler's {size}")
        size = need if size is None else size
        return Window(order, size, np.minimum(committed, table.num_tokens - size).astype(np.int32), delay)


@dataclasses.dataclass(frozen=True)
class Net:
    """The sampler's network: `apply(params, x, t, cond, start, cache) -> (eps, cache, aux)` with `start` the row's
    window start (`Window`), the cache carried from row to row (`empty(batch)` before row 0, `prefill(params, x, t,
    cond)`, one pass over every token, for a state sampled so far) and `aux` whatever the net reports of a pass
    (a pytree; `sample`'s trace keeps it per row). `dense` wraps an eps_fn that reads every token, keeps no cache
    and reports nothing."""

    apply: Callable
    empty: Callable
    prefill: Callable
    window: Window | None = None

    @staticmethod
    def dense(eps_fn: diffusion.EpsFn) -> "Net":
        return Net(lambda params, x, t, cond, start, cache: (eps_fn(params, x, t, cond), cache, None),
                   lambda batch: None, lambda params, x, t, cond: None)


@flax.struct.dataclass
class Row:
    """What the sampler scans over, one entry per table row (static data from the table)."""

    index: jax.Array  # [] int32 the row
    t_after: jax.Array  # [K] int32 each token's timestep after the row (-1: clean)
    candidates: jax.Array  # [K] bool tokens ACS may correct after the row
    any_candidate: jax.Array  # [] bool
    start: jax.Array  # [] int32 the row's window start (`Window`; 0 dense)


def _per_pixel(v: jax.Array, tokens: np.ndarray) -> jax.Array:
    """[b, K] per-token values -> [b, *tokens.shape] per pixel."""
    return jnp.take(v, jnp.asarray(tokens)[..., 0], axis=1)[..., None]


def _token_mean(v: jax.Array, tokens: np.ndarray, num_tokens: int) -> jax.Array:
    """[b, *shape] -> [b, K] mean of each token's pixels (and channels)."""
    onehot = jax.nn.one_hot(jnp.asarray(tokens)[..., 0], num_tokens)  # [*spatial, K]
    total = jnp.einsum("b...c,...k->bk", v, onehot)
    return total / (onehot.sum(axis=tuple(range(onehot.ndim - 1))) * v.shape[-1])


@flax.struct.dataclass
class Trace:
    """Per row of a traced `sample`: the predicted clean image, what the net reported of its pass (`Net` aux) and,
    with `score`, ACS's re-read gap of each token it may correct after the row (NaN elsewhere)."""

    x0: jax.Array  # [rows, b, ...]
    aux: Any  # [rows, b, ...] leaves
    gaps: jax.Array | None = None  # [rows, b, K]


@flax.struct.dataclass
class Plan:
    """A table as the arrays the sampler reads (`plan`): its chain, its rows, its ACS re-noising timestep."""

    chain: diffusion.Chain  # fields [S, K]
    rows: Row  # fields [S, ...]
    t_c: jax.Array  # [] int32


def plan(table: Table, num_timesteps: int, *, window: Window | None = None, eta: float | None = None,
         temperature: float | Sequence[float] = 0.0, acs: ACS | None = None, num_steps: int | None = None,
         candidates: bool | None = None) -> Plan:
    """`table` padded with no-op rows to `num_steps` (None: its own) as arrays: its per-token `chain`, each row's
    timesteps after it, ACS's candidates (`candidates`, default where acs.k > 0; else none) and, with a `window`
    (its order, size and delay), each row's window start."""
    table = table.padded(num_steps or table.num_steps)
    acs = acs or ACS(0, 1)
    ts = timesteps(table.tau, num_timesteps)
    cand = (acs.candidates(table) if (acs.k > 0 if candidates is None else candidates)
            else np.zeros((table.num_steps, table.num_tokens), bool))
    starts = (np.zeros(table.num_steps, np.int32) if window is None
              else Window.plan(table, window.order, window.delay, window.size).start)
    rows = Row(jnp.arange(table.num_steps), jnp.asarray(ts[table.levels[1:]], jnp.int32), jnp.asarray(cand),
               jnp.asarray(cand.any(axis=1)), jnp.asarray(starts))
    t_c = jnp.int32(ts[min(acs.level, table.tau)])  # the re-noising timestep (checked by `candidates` where k > 0)
    return Plan(chain(table, num_timesteps, eta=eta, temperature=temperature), rows, t_c)


def sample(eps_fn: diffusion.EpsFn | Net, params, table: Table | Sequence[Table], num_timesteps: int,
           x_init: jax.Array, keys: jax.Array, tokens: np.ndarray, *, eta: float | None = None,
           temperature: float | Sequence[float] = 0.0, acs: ACS | None = None, cond: Any = None,
           clip_x0: bool = True, noise_fn: Callable | None = None, rows: tuple[int, int] | None = None,
           trace: bool = False, score: bool = False):
    """Every row of `table` from x_init (each token at its row-0 level; a token at pure noise holds `token_noise`'s
    draw at timestep T) in one `lax.scan`: eps_fn sees each token's timestep [b, K] (-1: clean), each token steps
    from its level to the next or is left as it is (`chain`), then `acs` corrects. A `Net` with a `Window` reads
    only each row's window and caches the committed tokens (the same images). Noise keyed per (example, token,
    step) (`token_noise`; an ACS re-noising of row s at step T + 1 + s) unless `noise_fn` replays another order.
    `table`: one for the batch, or one per example (per-seed schedules, padded with no-op rows to the longest: one
    compiled shape; each example's image is the one its table alone gives).
    `rows` (start, stop): those rows only, from x before row start (a probe, then its finish: the same image as one
    run; a cached net's cache rebuilt by one `prefill` pass). Returns x, or with `trace` (x, `Trace`: each row's
    predicted clean image (a token left alone is its own value, clipped) and its pass's `Net` aux; with `score`
    also ACS's correction scores: after each row with tokens `acs` may correct, their re-read gaps from one more
    pass, whatever acs.k, so a probe can read them without correcting anything)."""
    net = eps_fn if isinstance(eps_fn, Net) else Net.dense(eps_fn)
    tables = [table] if isinstance(table, Table) else list(table)
    steps = max(t.num_steps for t in tables)
    acs = acs or ACS(0, 1)
    plans = [plan(t, num_timesteps, window=net.window, eta=eta, temperature=temperature, acs=acs, num_steps=steps,
                  candidates=acs.k > 0 or score) for t in tables]
    start, stop = rows or (0, steps)
    if not 0 <= start < stop <= steps:
        raise ValueError(f"rows ({start}, {stop}) must lie within the table's {steps} rows")
    run = functools.partial(_run, net, params, num_timesteps=num_timesteps, tokens=tokens, k=acs.k, clip_x0=clip_x0,
                            noise_fn=noise_fn or token_noise(tokens), rows=(start, stop), trace=trace,
                            score=score and trace)
    if isinstance(table, Table):
        return run(plans[0], x_init, keys, cond)
    chex.assert_axis_dimension(x_init, 0, len(tables))

    def one(p, x, key, c):  # an example alone: a batch of one
        out = run(p, x[None], key[None], jax.tree.map(lambda v: v[None], c))
        return (out[0][0], jax.tree.map(lambda v: v[:, 0], out[1])) if trace else out[0]

    out = jax.vmap(one)(jax.tree.map(lambda *v: jnp.stack(v), *plans), x_init, keys, cond)
    return (out[0], jax.tree.map(lambda v: jnp.swapaxes(v, 0, 1), out[1])) if trace else out


def _run(net: Net, params, plan: Plan, x_init, keys, cond, *, num_timesteps, tokens, k, clip_x0, noise_fn, rows,
         trace, score):
    """`sample` of one plan over a batch."""
    c, t_c = plan.chain, plan.t_c
    ac = diffusion.linear_schedule(num_timesteps)
    b, K = x_init.shape[0], c.t.shape[1]

    def reread(x, row: Row, cache):
        """The candidates re-noised to t_c and read again in one pass: (their clean estimate, each token's gap [b, K],
        -inf where not a candidate)."""
        t_eval = jnp.broadcast_to(jnp.where(row.candidates, t_c, row.t_after), (b, K))
        z = noise_fn(keys, jnp.full((b, K), num_timesteps + 1, jnp.int32) + row.index, x.shape[1:])
        picked = _per_pixel(jnp.broadcast_to(row.candidates, (b, K)), tokens)
        x_c = jnp.where(picked, jnp.sqrt(ac.alphas_cumprod[t_c]) * x + jnp.sqrt(1.0 - ac.alphas_cumprod[t_c]) * z, x)
        eps = net.apply(params, x_c, t_eval, cond, row.start, cache)[0].astype(jnp.float32)  # commits, reports nothing
        x0 = diffusion.predict_x0(ac, x_c, jnp.full((b,), t_c), eps)
        x0 = jnp.clip(x0, -1.0, 1.0) if clip_x0 else x0
        return x0, jnp.where(row.candidates, _token_mean(jnp.square(x0 - x), tokens, K), -jnp.inf)

    def correct(x, row: Row, cache):
        x0, gap = reread(x, row, cache)
        chosen = (gap >= jax.lax.top_k(gap, k)[0][:, -1:]) & jnp.isfinite(gap)  # the k largest gaps
        return jnp.where(_per_pixel(chosen, tokens), x0, x), gap

    def step(carry, row: Row):
        x, cache = carry
        t = jnp.broadcast_to(c.t[row.index], (b, K))
        eps, cache, aux = net.apply(params, x, t, cond, row.start, cache)
        x, x0 = diffusion.chain_step(c, row.index, x, eps.astype(jnp.float32), noise_fn(keys, t, x.shape[1:]),
                                     clip_x0, tokens)
        none = lambda x, *_: (x, jnp.full((b, K), -jnp.inf))
        if k:
            x, gap = jax.lax.cond(row.any_candidate, correct, none, x, row, cache)
        elif score:
            gap = jax.lax.cond(row.any_candidate, reread, none, x, row, cache)[1]
        gaps = jnp.where(jnp.isfinite(gap), gap, jnp.nan) if score else None
        return (x, cache), (Trace(x0, aux, gaps) if trace else None)

    start, stop = rows
    x = x_init.astype(jnp.float32)
    cache = net.prefill(params, x, jnp.broadcast_to(c.t[start], (b, K)), cond) if start else net.empty(b)
    (x, _), out = jax.lax.scan(step, (x, cache), jax.tree.map(lambda v: v[start:stop], plan.rows))
    return (x, out) if trace else x
