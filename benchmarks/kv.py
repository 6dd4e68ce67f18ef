"""(c) Model B's KV-cached AR loop vs recomputing the prefix at every step.

Cached: a `lax.scan` over the 16 positions, each step one decoder call on one position
against the KV cache (the sampler's step, without the sown intermediates). Recompute (the
baseline, written here): at step i the full teacher-forcing pass over the sequence read so
far (start token + the first i patches, i + 1 positions) and the prediction at position i.
Both draw the same noise, so they sample the same patches (checked). Per-step time against
the position must stay flat for the cached loop (it always attends over the fixed 16-slot
cache) and grows with i for the recompute.
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp

from benchmarks.samplers import perturbed
from benchmarks.timing import Table, compile_jax, ms, time_many, xla_flops
from hybrid_jax import diffusion, xla
from hybrid_jax.config import get_preset
from hybrid_jax.generators import model_b

POSITIONS = (1, 4, 8, 12, 15)  # not 0: there the output ignores the input (start token) and XLA hoists it
STEP_REPEATS = 16  # steps per timed call in the per-position table (amortises the dispatch of one call)


def make_loops(preset):
    mcfg = preset.model_b
    seq_len, patch_dim = preset.geometry.num_patches, preset.geometry.patch_dim
    decoder = model_b.make_decoder(mcfg, geometry=preset.geometry)
    temp = mcfg.temperature

    def noise(keys, i):
        ar_keys = jax.vmap(lambda k: jax.random.fold_in(k, 0))(keys)
        return diffusion.per_example_normal(ar_keys, i, (patch_dim,))

    @xla.jit
    def cached(params, keys):
        n = keys.shape[0]

        def step(carry, _):
            cache, patches, prev, i = carry
            means, cache = decoder.apply({"params": params}, prev[:, None], i, cache)
            patch = means[:, 0] + temp * noise(keys, i)
            patches = jax.lax.dynamic_update_slice(patches, patch[:, None], (0, i, 0))
            return (cache, patches, patch, i + 1), None

        init = (model_b.empty_cache(decoder, n), jnp.zeros((n, seq_len, patch_dim)),
                jnp.zeros((n, patch_dim)), jnp.zeros((), jnp.int32))
        (_, patches, _, _), _ = jax.lax.scan(step, init, None, length=seq_len)
        return patches

    def full_pass(params, seq):
        """Teacher-forcing pass over `seq` [n, q, 192] (slot 0 = start token): means [n, q, 192]."""
        cache = model_b.empty_cache(decoder, seq.shape[0])
        return decoder.apply({"params": params}, seq, 0, cache)[0]

    @xla.jit
    def recompute(params, keys):
        n = keys.shape[0]
        patches = jnp.zeros((n, seq_len, patch_dim))
        for i in range(seq_len):  # shapes differ per step: a Python loop
            seq = jnp.pad(patches[:, :i], ((0, 0), (1, 0), (0, 0)))
            patches = patches.at[:, i].set(full_pass(params, seq)[:, i] + temp * noise(keys, i))
        return patches

    def step_cached(params, prev, i, cache):
        """STEP_REPEATS cached decoder steps at position i; each reads the previous one's output."""
        def body(_, carry):
            prev, cache = carry
            means, cache = decoder.apply({"params": params}, prev, i, cache)
            return means, cache

        return jax.lax.fori_loop(0, STEP_REPEATS, body, (prev, cache))[0]

    def step_recompute(params, seq):
        """STEP_REPEATS teacher-forcing passes over seq [n, i + 1, 192]; each feeds its last output back."""
        def body(_, seq):
            return seq.at[:, -1].set(full_pass(params, seq)[:, -1])

        return jax.lax.fori_loop(0, STEP_REPEATS, body, seq)

    return cached, recompute, xla.jit(step_cached), xla.jit(step_recompute)


def run(presets: list[str], repeats: int, batch: int = 1) -> list[Table]:
    loops = Table(f"B's AR loop, 16 steps, batch {batch}: KV cache vs recomputing the prefix",
                  ["preset", "cached ms/img", "recompute ms/img", "recompute / cached", "library ar_prefix(16) ms/img",
                   "cached compile s", "recompute compile s", "max |patch diff|"])
    steps = Table(f"B's per-step time vs position, batch {batch} ({STEP_REPEATS} dependent steps per timed call)",
                  ["preset", "position", "cached ms", "recompute ms", "cached MFLOP XLA", "recompute MFLOP XLA"])
    flat = Table("Flatness of the per-step time", ["preset", "cached max/min over positions",
                                                   "recompute t(15)/t(1)"])
    loops.notes.append("library ar_prefix(16) = the sampler's own loop, which also sows attention/hidden states "
                       "and runs one extra 16-position teacher-forcing pass for the router's self-consistency features.")
    for name in presets:
        preset = get_preset(name)
        seq_len, patch_dim = preset.geometry.num_patches, preset.geometry.patch_dim
        key = jax.random.key(0)
        params = perturbed(jax.jit(functools.partial(model_b.init_params, preset.model_b, preset.corrector))(key))
        keys = jax.random.split(key, batch)
        cached, recompute, step_cached, step_recompute = make_loops(preset)
        sampler = model_b.make_sampler(preset.model_b, preset.corrector)
        lib = xla.jit(lambda p, k: sampler.ar_prefix(p, k, seq_len).state.patches)
        res = time_many({"cached": (cached, (params["ar"], keys)), "recompute": (recompute, (params["ar"], keys)),
                         "library": (lib, (params, keys))}, repeats=repeats)
        diff = float(jnp.max(jnp.abs(res["cached"].compiled(params["ar"], keys)
                                     - res["recompute"].compiled(params["ar"], keys))))
        c, r = res["cached"], res["recompute"]
        loops.add(name, ms(c.median_s) / batch, ms(r.median_s) / batch, r.median_s / c.median_s,
                  ms(res["library"].median_s) / batch, c.compile_s, r.compile_s, diff)
        print(loops.row_text(), flush=True)

        filled = model_b.empty_cache(model_b.make_decoder(preset.model_b, geometry=preset.geometry), batch)
        filled = jax.tree.map(lambda a: jax.random.normal(key, a.shape, a.dtype), filled)
        prev = jax.random.normal(key, (batch, 1, patch_dim))
        one_cached, _ = compile_jax(step_cached, params["ar"], prev, jnp.int32(0), filled)  # i is traced
        contenders = {}
        for i in POSITIONS:
            contenders[f"c{i}"] = (one_cached, (params["ar"], prev, jnp.int32(i), filled))
            contenders[f"r{i}"] = (step_recompute, (params["ar"], jax.random.normal(key, (batch, i + 1, patch_dim))))
        per = time_many(contenders, repeats=max(2 * repeats + 1, 9))
        for i in POSITIONS:
            steps.add(name, i, ms(per[f"c{i}"].median_s) / STEP_REPEATS, ms(per[f"r{i}"].median_s) / STEP_REPEATS,
                      xla_flops(one_cached) / 1e6, xla_flops(per[f"r{i}"].compiled) / 1e6)
        steps.notes.append("ms columns are per step; MFLOP columns are XLA's count for the timed call, which "
                            "counts the fori_loop body once (see the samplers table), i.e. one step.") if not steps.notes else None
        tc = [per[f"c{i}"].median_s for i in POSITIONS]
        flat.add(name, max(tc) / min(tc), per[f"r{POSITIONS[-1]}"].median_s / per[f"r{POSITIONS[0]}"].median_s)
    return [loops, steps, flat]
