"""The hyperschedule family (`Preset.hyperschedule`): one transformer with a timestep per patch token
(`models.token_transformer`) trained on the schedules it is offered, and per schedule and ACS k an option that
samples the schedule's level table (`hybrid_jax.hyperschedule.sample`). Windowed (`hyperschedule.windowed`), a
pass evaluates only its row's window of tokens after a key/value cache of the committed ones (a unit
`hs_window_<size>` per window size); dense, every pass reads every token (unit `hs_pass`): the same images.

A token's noise is keyed on (seed, token, timestep) (`hyperschedule.token_noise`), so an image depends on its seed
alone. ACS (k > 0) is our Gaussian extrapolation of the source's text-only correction.
"""

from __future__ import annotations

import dataclasses
from typing import Any, Callable

import flax
import jax
import jax.numpy as jnp
import numpy as np

from hybrid_jax import diffusion, geometry as geometry_lib, timing, xla
from hybrid_jax import hyperschedule as hs
from hybrid_jax.config import Geometry, HSSchedule, Preset
from hybrid_jax.data import images_and_labels
from hybrid_jax.generators.base import Family, Generator, Network, Probe
from hybrid_jax.models import build, class_labels
from hybrid_jax.models.token_transformer import Prefix, TokenTransformer
from hybrid_jax.probe import features

NAME = "hyperschedule"
STREAM = 4
UNIT = "hs_pass"  # one dense pass of the network over every token (and a windowed sampler's cache prefill)


def unit_order(order: str, geometry: Geometry) -> np.ndarray:
    """The patch tokens (raster index) in a unit order: "raster" (B's), or "blocks" (A's quadrants one after
    another, raster within each)."""
    return {"raster": np.arange(geometry.num_patches), "blocks": geometry_lib.block_order(geometry)}[order]


def table(s: HSSchedule, geometry: Geometry) -> hs.Table:
    return hs.staggered(geometry.num_patches, s.tau, s.group, s.delay, unit_order(s.order, geometry))


@dataclasses.dataclass(frozen=True)
class Tokens:
    """The network's tokens: each of the geometry's patches (a schedule's unit) split into sub-patches of side
    `side` (the patch's own side: one token per unit), unit by unit, raster within a unit; each token carries its
    unit's timestep, rank and role."""

    geometry: Geometry
    side: int

    @staticmethod
    def of(cfg: Preset) -> "Tokens":
        return Tokens(cfg.geometry, cfg.hyperschedule.network.sub_patch or cfg.geometry.patch_size)

    @property
    def per_side(self) -> int:
        return self.geometry.patch_size // self.side

    @property
    def per_unit(self) -> int:
        return self.per_side ** 2

    @property
    def count(self) -> int:
        return self.geometry.num_patches * self.per_unit

    @property
    def dim(self) -> int:
        return self.side * self.side * self.geometry.channels

    def split(self, x: jax.Array) -> jax.Array:
        """[b, S, S, C] -> [b, count, dim]."""
        g, n, s = self.geometry, self.per_side, self.side
        y = geometry_lib.patchify(x, g).reshape(x.shape[0], g.num_patches, n, s, n, s, g.channels)
        return jnp.swapaxes(y, 3, 4).reshape(x.shape[0], self.count, self.dim)

    def merge(self, tokens: jax.Array) -> jax.Array:
        """Exact inverse of `split`."""
        g, n, s = self.geometry, self.per_side, self.side
        y = jnp.swapaxes(tokens.reshape(tokens.shape[0], g.num_patches, n, n, s, s, g.channels), 3, 4)
        return geometry_lib.unpatchify(y.reshape(tokens.shape[0], g.num_patches, g.patch_dim), g)

    def expand(self, v):
        """Per-unit values [..., K] -> per token [..., count]."""
        return jnp.repeat(v, self.per_unit, axis=-1)


def make_model(cfg: Preset) -> TokenTransformer:
    tokens = Tokens.of(cfg)
    return build(TokenTransformer, cfg.hyperschedule.network.model, num_tokens=tokens.count,
                 token_dim=tokens.dim, num_classes=cfg.data.num_classes)


def init_params(model: TokenTransformer, key: jax.Array):
    x = jnp.zeros((1, model.num_tokens, model.token_dim))
    t = jnp.zeros((1, model.num_tokens), jnp.int32)
    return model.init(key, x, t, t < 0, jnp.arange(model.num_tokens))["params"]


def _ranks(schedule: HSSchedule, geometry: Geometry) -> np.ndarray:
    """[K] each token's position in the schedule's unit order (the settled tokens' causal order)."""
    return np.argsort(unit_order(schedule.order, geometry)).astype(np.int32)


def _entropy(sown, t: jax.Array, num_timesteps: int) -> tuple[jax.Array, jax.Array]:
    """`features.query_entropy` of the pass's noisy queries that are not hidden (the ones reading other tokens)."""
    return features.query_entropy(sown["intermediates"]["attn"], (t >= 0) & (t < num_timesteps - 1))


def make_dense_net(model: TokenTransformer, tokens: Tokens, rank: np.ndarray, num_timesteps: int) -> hs.Net:
    """The dense sampler's network: every pass reads every token (`tokens`; per unit: the clean ones settled, those
    at pure noise hidden, `rank` [K] its position in the unit order); it reports the attention entropy of its noisy
    queries (`_entropy`)."""
    def apply(params, x, t, labels, start, cache):
        t = tokens.expand(t)
        eps, sown = model.apply({"params": params}, tokens.split(x), t, t < 0, tokens.expand(jnp.asarray(rank)),
                                labels, t >= num_timesteps - 1, mutable=["intermediates"])
        return tokens.merge(eps), cache, _entropy(sown, t, num_timesteps)

    return hs.Net(apply, lambda batch: None, lambda params, x, t, labels: None)


def make_eps_fn(model: TokenTransformer, tokens: Tokens, rank: np.ndarray, num_timesteps: int) -> diffusion.EpsFn:
    """eps_fn(params, x [b, S, S, 3], t [b, K] per unit (-1 clean), labels): `make_dense_net`'s eps."""
    net = make_dense_net(model, tokens, rank, num_timesteps)
    return lambda params, x, t, labels: net.apply(params, x, t, labels, 0, None)[0]


def make_cached_net(model: TokenTransformer, tokens: Tokens, window: hs.Window, num_timesteps: int) -> hs.Net:
    """The windowed sampler's network: each pass reads the tokens of the row's `window` of units (in the unit
    order) after the cached keys and values of the committed ones and writes the window's into the cache; eps is 0
    outside the window (units that do not move in that row). The same eps, and attention entropy, as
    `make_dense_net`'s on the units that move."""
    r, k = tokens.per_unit, tokens.geometry.num_patches
    order, inverse = jnp.asarray(window.order), np.argsort(window.order)
    head_dim = model.width // model.num_heads

    def empty(batch):
        z = jnp.zeros((model.num_layers, batch, k * r, model.num_heads, head_dim))
        return Prefix(z, z, jnp.zeros((batch, k * r), bool))

    def run(params, x, t, labels, start, cache: Prefix, size: int):
        units = lambda v: v.reshape(v.shape[0], k, r, *v.shape[2:])  # [b, K * r, ...] <-> [b, K, r, ...]
        flat = lambda v: v.reshape(v.shape[0], k * r, *v.shape[3:])
        u, tu = flat(units(tokens.split(x))[:, order]), tokens.expand(t[:, order])  # unit order
        xw, tw = (jax.lax.dynamic_slice_in_dim(v, start * r, size * r, axis=1) for v in (u, tu))
        pos = start + jnp.arange(size)  # the window's units, by position in the unit order
        ids = (order[pos][:, None] * r + jnp.arange(r)).reshape(-1)
        prefix = cache.replace(valid=jnp.broadcast_to(jnp.arange(k * r) < start * r, cache.valid.shape))
        (eps, kw, vw), sown = model.apply({"params": params}, xw, tw, tw < 0, tokens.expand(pos), labels,
                                          tw >= num_timesteps - 1, ids, prefix, method="window",
                                          mutable=["intermediates"])
        write = lambda c, w: jax.lax.dynamic_update_slice(c, w.astype(c.dtype), (0, 0, start * r, 0, 0))
        eps = flat(units(jax.lax.dynamic_update_slice(jnp.zeros_like(u), eps, (0, start * r, 0)))[:, inverse])
        return (tokens.merge(eps), Prefix(write(cache.k, kw), write(cache.v, vw), cache.valid),
                _entropy(sown, tw, num_timesteps))

    return hs.Net(lambda params, x, t, labels, start, cache: run(params, x, t, labels, start, cache, window.size),
                  empty, lambda params, x, t, labels: run(params, x, t, labels, 0, empty(x.shape[0]), k)[1], window)


def make_loss(cfg: Preset) -> Callable[[Any, Any, jax.Array], jax.Array]:
    """loss(params, batch, key): eps-MSE on the active tokens of a random row of a random trained schedule (those
    whose level falls in that row), the settled ones clean (or, with probability `context_noise`, at a random
    timestep <= `context_level`), the waiting ones at their pure-noise level; for `random_share` of the examples a
    uniform timestep per token instead, every token active."""
    n, g, tokens = cfg.hyperschedule.network, cfg.geometry, Tokens.of(cfg)
    model = make_model(cfg)
    tables = [table(s, g) for s in n.schedules]
    rows = max(t.num_steps for t in tables)
    steps = jnp.asarray([t.num_steps for t in tables])
    ts = jnp.asarray(np.stack([hs.timesteps(t.tau, n.num_timesteps)[t.padded(rows).levels] for t in tables]))
    ranks = jnp.asarray(np.stack([_ranks(s, g) for s in n.schedules]))
    sched = diffusion.linear_schedule(n.num_timesteps)

    def loss(params, batch, key):
        images, labels = images_and_labels(batch)
        x0 = tokens.split(images)  # [b, K * r, d]
        b, k = x0.shape[0], g.num_patches
        keys = [jax.random.fold_in(key, i) for i in range(7)]
        which = jax.random.randint(keys[0], (b,), 0, len(tables))
        row = jnp.floor(jax.random.uniform(keys[1], (b,)) * steps[which]).astype(jnp.int32)
        t_now, t_next = ts[which, row], ts[which, row + 1]  # [b, K]
        random = jax.random.uniform(keys[2], (b, 1)) < n.random_share
        t_now = jnp.where(random, jax.random.randint(keys[3], (b, k), 0, n.num_timesteps), t_now)
        active = random | (t_now != t_next)
        settled = t_now < 0
        context = (jax.random.uniform(keys[4], (b, 1)) < n.context_noise) & settled
        t_in = jnp.where(context, jax.random.randint(keys[5], (b, k), 0, n.context_level + 1), t_now)
        t_in, settled, active = (tokens.expand(v) for v in (t_in, settled, active))  # per unit -> per token
        noise = jax.random.normal(keys[6], x0.shape)
        x_t = jnp.where((t_in >= 0)[..., None], diffusion.q_sample(sched, x0.reshape(-1, x0.shape[-1]), jnp.maximum(
            t_in, 0).reshape(-1), noise.reshape(-1, x0.shape[-1])).reshape(x0.shape), x0)
        eps = model.apply({"params": params}, x_t, t_in, settled, tokens.expand(ranks[which]), labels,
                          t_in >= n.num_timesteps - 1)
        per_token = jnp.mean(jnp.square(eps - noise), axis=-1)
        return jnp.sum(per_token * active) / jnp.maximum(jnp.sum(active), 1)

    return loss


@flax.struct.dataclass
class State:
    """Sampling after some rows of a schedule: the image so far and the seeds' keys and classes."""

    x: jax.Array  # [b, S, S, 3]
    keys: jax.Array  # [b]
    labels: jax.Array  # [b]

    def take(self, idx) -> "State":
        return State(self.x[idx], self.keys[idx], self.labels[idx])

    @staticmethod
    def concatenate(states: "list[State]") -> "State":
        return State(*(jnp.concatenate([getattr(s, f) for s in states]) for f in ("x", "keys", "labels")))


def window(cfg: Preset, schedule: HSSchedule) -> hs.Window:
    """The schedule's window in its unit order, tokens committed `acs_window` rows after they settle."""
    g = cfg.geometry
    return hs.Window.plan(table(schedule, g), unit_order(schedule.order, g), cfg.hyperschedule.acs_window)


def window_unit(size: int) -> str:
    return f"hs_window_{size}"


class _Schedule:
    """One trained schedule's sampling pieces: its table, its network (windowed or dense), the tokens' pixels, the
    start state."""

    def __init__(self, cfg: Preset, schedule: HSSchedule):
        n, g = cfg.hyperschedule.network, cfg.geometry
        self.schedule, self.table, self.T = schedule, table(schedule, g), n.num_timesteps
        model, w, tokens = make_model(cfg), window(cfg, schedule), Tokens.of(cfg)
        self.net = (make_cached_net(model, tokens, w, self.T) if cfg.hyperschedule.windowed and w.size < g.num_patches
                    else make_dense_net(model, tokens, _ranks(schedule, g), self.T))
        self.tokens = diffusion.tile_tokens(g.image_size, g.image_size, g.patch_size)
        self.num_classes, self.geometry = cfg.data.num_classes, g

    def pass_counts(self, passes: int, resumed: bool = False) -> dict[str, int]:
        """Passes by unit: windowed, each of the window's size and, resuming a state, the cache's prefill."""
        if self.net.window is None:
            return {UNIT: passes}
        return {window_unit(self.net.window.size): passes, **({UNIT: 1} if resumed else {})}

    def start(self, keys, labels) -> State:
        x = hs.token_noise(self.tokens)(keys, jnp.full((keys.shape[0], self.geometry.num_patches), self.T),
                                        self.geometry.image_shape)
        return State(x, keys, class_labels(labels, keys.shape[0], self.num_classes))

    def run(self, params, state: State, rows, acs: hs.ACS | None = None, trace: bool = False, score: bool = False):
        return hs.sample(self.net, params, self.table, self.T, state.x, state.keys, self.tokens, acs=acs,
                         cond=state.labels, temperature=self.schedule.temperature, rows=rows, trace=trace,
                         score=score)


def _acs(cfg: Preset, schedule: HSSchedule, k: int) -> hs.ACS:
    o = cfg.hyperschedule
    return hs.ACS(k, min(o.acs_level or schedule.tau, schedule.tau), o.acs_window)


def _name(schedule: HSSchedule, k: int) -> str:
    return f"HS/{schedule.name} tau {schedule.tau}, k {k}"


def option(cfg: Preset, schedule: HSSchedule, k: int) -> Generator:
    """The schedule sampled with ACS re-reading k tokens per row (`hyperschedule.acs_*`), ancestral DDPM."""
    s, acs = _Schedule(cfg, schedule), _acs(cfg, schedule, k)

    def sample_keys(params, keys, labels=None):
        return jnp.clip(s.run(params, s.start(keys, labels), None, acs), -1.0, 1.0)

    passes = s.pass_counts(s.table.passes + acs.passes(s.table))
    return Generator(_name(schedule, k), NAME, xla.jit(sample_keys), passes, stream=STREAM)


def options(cfg: Preset) -> tuple[Generator, ...]:
    """An option per trained schedule and ACS k, most expensive first (its learning curve judges the first trained
    schedule at the smallest k: the family's brief option)."""
    o = cfg.hyperschedule
    opts = [option(cfg, s, k) for s in o.network.schedules for k in o.acs_k]
    return tuple(sorted(opts, key=lambda g: -g.passes))


PROBE = "HS"  # its own probe's name (`Generator.probe` of the options continuing it)
PROBE_FEATURES = (*("hs_" + n for n in features.A_PROBE), "hs_attn_entropy", "hs_correction_mean",
                  "hs_correction_max")


def probe(cfg: Preset) -> Probe | None:
    """With `hyperschedule.probe_schedule`: that schedule's first `probe_rows` rows (no ACS) and, read off the
    predicted clean image of each probe row over the tokens active in them, A's probe statistics (image statistics
    of the last prediction, how much it still moves between rows), the mean normalised attention entropy of the
    noisy tokens that read others over the probe's passes, and ACS's correction scores of the tokens it settles
    (their mean and largest re-read gap: one more pass per probe row that settles tokens, correcting nothing); per
    ACS k, the option that continues the probe's
    state through the remaining rows ("... after probe": the same image as sampling them in one run)."""
    o = cfg.hyperschedule
    if o.probe_schedule is None:
        return None
    schedule = next(s for s in o.network.schedules if s.name == o.probe_schedule)
    s, rows = _Schedule(cfg, schedule), o.probe_rows
    active = s.table.active[:rows].any(axis=0)  # [K] tokens the probe moves
    mask = active[s.tokens[..., 0]][..., None].astype(np.float32)  # [S, S, 1]

    scoring = _acs(cfg, schedule, 0)  # ACS's level and window, k = 0: the probe scores and corrects nothing
    scored = scoring.passes(s.table, 0, rows, score=True)

    def run(params, keys, labels=None):
        start = s.start(keys, labels)
        x, trace = s.run(params, start, (0, rows), scoring, trace=True, score=True)
        gaps = jnp.moveaxis(trace.gaps, 1, 0).reshape(keys.shape[0], -1) if scored else jnp.zeros((keys.shape[0], 1))
        correction = [jnp.nan_to_num(f(gaps, axis=1)) for f in (jnp.nanmean, jnp.nanmax)]
        return start.replace(x=x), jnp.concatenate([features.a_probe(trace.x0, mask), jnp.stack(
            [features.entropy_mean(*trace.aux), *correction], axis=1)], axis=1)

    run = xla.jit(run)

    def after(k: int) -> Generator:
        acs = _acs(cfg, schedule, k)
        finish = xla.jit(lambda params, state: jnp.clip(s.run(params, state, (rows, s.table.num_steps), acs),
                                                        -1.0, 1.0))
        sample = xla.jit(lambda params, keys, labels=None: finish(params, run(params, keys, labels)[0]))
        passes = s.pass_counts(s.table.passes + scored + acs.passes(s.table, rows), resumed=True)
        return Generator(_name(schedule, k) + " after probe", NAME, sample, passes, stream=STREAM, probe=PROBE,
                         finish=finish)

    return Probe(PROBE, run, PROBE_FEATURES, tuple(after(k) for k in sorted(set(o.acs_k), reverse=True)))


def pass_flops(cfg: Preset, params) -> dict[str, float]:
    """FLOPs at batch 1 (XLA's cost analysis) of one dense pass over every token and, windowed, of one pass of each
    schedule's window size after a full cache (a schedule whose window is every token samples dense)."""
    model, g, T, tokens = make_model(cfg), cfg.geometry, cfg.hyperschedule.network.num_timesteps, Tokens.of(cfg)
    x, t = jnp.zeros((1, *g.image_shape)), jnp.zeros((1, g.num_patches), jnp.int32)
    dense = make_eps_fn(model, tokens, np.arange(g.num_patches), T)
    out = {UNIT: timing.flops(lambda p, x, t: dense(p, x, t, None), params, x, t)}
    for s in cfg.hyperschedule.network.schedules if cfg.hyperschedule.windowed else ():
        if (w := window(cfg, s)).size == g.num_patches:
            continue  # a window of every token: the dense pass
        net = make_cached_net(model, tokens, w, T)
        out[window_unit(net.window.size)] = timing.flops(
            lambda p, x, t: net.apply(p, x, t, None, jnp.int32(0), net.empty(1)), params, x, t)
    return out


FAMILY = Family(NAME, STREAM, (Network(NAME, lambda cfg: cfg.hyperschedule.network, make_loss,
                                       lambda cfg, key: init_params(make_model(cfg), key), version=2),),
                settings=lambda cfg: cfg.hyperschedule, assemble=lambda p: p[NAME], options=options,
                brief=lambda cfg: option(cfg, cfg.hyperschedule.network.schedules[0], min(cfg.hyperschedule.acs_k)),
                pass_flops=pass_flops, probe=probe)
