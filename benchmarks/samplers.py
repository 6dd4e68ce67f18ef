"""(b) Full samplers A and B per image, their overhead over the bare network passes, FLOPs, scan unroll.

overhead = sampler time / (sum over pass kinds of passes x one-pass time), each pass timed
alone as its own jitted function at the same batch, side by side with the samplers. Model
A: 4 x steps_per_block U-Net passes. Model B: 16 KV-cached decoder steps + start_step
corrector U-Net passes. FLOPs come from XLA's cost analysis of the compiled executables;
the whole sampler's figure is compared with passes x FLOPs per pass to show whether the
analysis multiplies a while loop's body by its trip count.
"""

from __future__ import annotations

import dataclasses
import functools

import jax
import jax.numpy as jnp
import numpy as np

from benchmarks.timing import Table, gflop, ms, time_many, xla_flops
from hybrid_jax import xla
from hybrid_jax.config import Preset, get_preset
from hybrid_jax.generators import model_a, model_b

TARGET_OVERHEAD = 1.03


def perturbed(params, scale: float = 0.02, seed: int = 1):
    """Params plus small Gaussian noise: fresh U-Nets end in a zero conv and would output exactly 0,
    which makes image comparisons trivial (timings do not depend on the values). NumPy noise: an
    eager jax.random call per leaf shape would compile hundreds of tiny programs."""
    rng = np.random.default_rng(seed)
    return jax.tree.map(lambda x: x + jnp.asarray(scale * rng.standard_normal(x.shape), x.dtype), params)


def _ok(ratio: float) -> str:
    return "yes" if ratio <= TARGET_OVERHEAD else "NO"


def _trip_count_note(sampler_flops: float, pass_flops: float) -> str:
    return f"{sampler_flops / pass_flops:.3g} pass(es)' worth"


def _preset_for(name: str, paper_a_steps: int) -> tuple[Preset, str]:
    preset = get_preset(name)
    note = ""
    if name == "paper" and paper_a_steps != preset.model_a.steps_per_block:
        note = (f"paper Model A sampler run with steps_per_block={paper_a_steps} ({4 * paper_a_steps} passes) "
                f"instead of {preset.model_a.steps_per_block} (800 passes) to keep the CPU run short; the "
                "overhead ratio is per step, so it does not depend on the number of steps.")
        preset = dataclasses.replace(preset, model_a=dataclasses.replace(preset.model_a, steps_per_block=paper_a_steps))
    return preset, note


def bench_model_a(preset: Preset, batch: int, repeats: int, unrolls: tuple[int, ...], key) -> dict:
    cfg = preset.model_a
    g = preset.geometry
    params = perturbed(jax.jit(functools.partial(model_a.init_params, cfg, geometry=g))(key))
    keys = jax.random.split(key, batch)
    eps = xla.jit(model_a.make_eps_fn(cfg))
    x = jax.random.normal(key, (batch, *g.image_shape))
    cond = model_a.block_condition(x, jnp.full((batch,), 1), g)
    t = jnp.full((batch,), cfg.steps_per_block // 2, jnp.int32)
    samplers = {u: model_a.make_sampler(dataclasses.replace(cfg, scan_unroll=u), geometry=g) for u in unrolls}
    contenders = {"pass": (eps, (params, x, t, (cond, None)))}
    contenders.update({f"unroll={u}": (s.sample_keys, (params, keys)) for u, s in samplers.items()})
    res = time_many(contenders, repeats=repeats, warmup=1)
    passes = samplers[unrolls[0]].passes
    images = {u: res[f"unroll={u}"].compiled(params, keys) for u in unrolls}
    max_diff = {u: float(jnp.max(jnp.abs(images[u] - images[unrolls[0]]))) for u in unrolls}
    return {"res": res, "passes": passes, "max_diff": max_diff, "pass_flops": xla_flops(res["pass"].compiled) / batch,
            "sampler_flops": {u: xla_flops(res[f"unroll={u}"].compiled) / batch for u in unrolls}}


def bench_model_b(preset: Preset, batch: int, repeats: int, key) -> dict:
    mcfg, ccfg = preset.model_b, preset.corrector
    g = preset.geometry
    params = perturbed(jax.jit(functools.partial(model_b.init_params, mcfg, ccfg, geometry=g))(key))
    keys = jax.random.split(key, batch)
    sampler = model_b.make_sampler(mcfg, ccfg, geometry=g)
    decoder = model_b.make_decoder(mcfg, geometry=g)
    unet = model_b.make_corrector_unet(ccfg)
    ar_step = xla.jit(lambda p, prev, i, cache: decoder.apply({"params": p}, prev, i, cache))
    corr = xla.jit(lambda p, x, t: unet.apply({"params": p}, x, t))
    prev = jax.random.normal(key, (batch, 1, g.patch_dim))
    cache = model_b.empty_cache(decoder, batch)
    x = jax.random.normal(key, (batch, *g.image_shape))
    t = jnp.full((batch,), ccfg.start_step // 2, jnp.int32)
    res = time_many({"ar_step": (ar_step, (params["ar"], prev, jnp.int32(8), cache)),
                     "corrector_pass": (corr, (params["corrector"], x, t)),
                     "sampler": (sampler.sample_keys, (params, keys))}, repeats=repeats, warmup=1)
    n_ar, n_corr = g.num_patches, ccfg.start_step
    return {"res": res, "n_ar": n_ar, "n_corr": n_corr,
            "ar_flops": xla_flops(res["ar_step"].compiled) / batch,
            "corr_flops": xla_flops(res["corrector_pass"].compiled) / batch,
            "sampler_flops": xla_flops(res["sampler"].compiled) / batch}


def run(presets: list[str], repeats: int, batch: int = 1, paper_a_steps: int = 5,
        unrolls: tuple[int, ...] = (1, 2, 4), paper_unrolls: tuple[int, ...] = (1,)) -> list[Table]:
    main = Table(f"Full samplers per image (batch {batch}) and their overhead over the bare passes",
                 ["preset", "model", "passes", "one pass ms", "sum of passes ms", "sampler ms/img",
                  "overhead ratio", f"<= {TARGET_OVERHEAD}", "compile s", "GFLOP/pass XLA", "GFLOP sampler XLA (whole scan)"])
    unroll_t = Table(f"Model A sampler vs lax.scan unroll (model_a.scan_unroll), batch {batch}",
                     ["preset", "unroll", "compile s", "sampler ms/img", "time vs unroll=1", "overhead ratio",
                      "max |img - img(unroll=1)|"])
    ab = Table("Whole-model time per image, A / B", ["preset", "A ms/img", "B ms/img", "A / B"])
    main.notes.append(f"Target: overhead ratio <= {TARGET_OVERHEAD} (the scan loop adds almost nothing). "
                      "For B, sum of passes = 16 x one KV-cached decoder step + start_step x one corrector pass.")
    key = jax.random.key(0)
    for name in presets:
        preset, note = _preset_for(name, paper_a_steps)
        if note:
            main.notes.append(note)
        us = paper_unrolls if name == "paper" else unrolls
        a = bench_model_a(preset, batch, repeats, us, key)
        ra = a["res"]
        base = ra[f"unroll={us[0]}"]
        denom = a["passes"] * ra["pass"].median_s
        main.add(name, "A", a["passes"], ms(ra["pass"].median_s), ms(denom), ms(base.median_s) / batch,
                 base.median_s / denom, _ok(base.median_s / denom), base.compile_s, gflop(a["pass_flops"]), gflop(a["sampler_flops"][us[0]]))
        print(main.row_text(), flush=True)
        for u in us:
            r = ra[f"unroll={u}"]
            unroll_t.add(name, u, r.compile_s, ms(r.median_s) / batch, r.median_s / base.median_s,
                         r.median_s / denom, a["max_diff"][u])
        main.notes.append(f"{name} A: XLA's cost analysis of the whole sampler counts "
                          f"{_trip_count_note(a['sampler_flops'][us[0]], a['pass_flops'])} of FLOPs for "
                          f"{a['passes']} passes: " + ("it multiplies loop bodies by their trip count."
                                                       if a["sampler_flops"][us[0]] > 0.9 * a["passes"] * a["pass_flops"]
                                                       else "it does NOT multiply a while loop's body by its trip "
                                                            "count, so whole-sampler FLOPs must be computed as "
                                                            "passes x FLOPs per pass."))
        b = bench_model_b(preset, batch, repeats, key)
        rb = b["res"]
        denom_b = b["n_ar"] * rb["ar_step"].median_s + b["n_corr"] * rb["corrector_pass"].median_s
        main.add(name, "B", f"{b['n_ar']}+{b['n_corr']}",
                 f"{ms(rb['ar_step'].median_s):.3f} / {ms(rb['corrector_pass'].median_s):.3f}",
                 ms(denom_b), ms(rb["sampler"].median_s) / batch, rb["sampler"].median_s / denom_b,
                 _ok(rb["sampler"].median_s / denom_b),
                 rb["sampler"].compile_s, f"{gflop(b['ar_flops']):.4f} / {gflop(b['corr_flops']):.3f}",
                 gflop(b["sampler_flops"]))
        print(main.row_text(), flush=True)
        full_a_passes = get_preset(name).model_a.steps_per_block * 4
        t_a = base.median_s / batch * full_a_passes / a["passes"]
        t_b = rb["sampler"].median_s / batch
        ab.add(name + ("" if full_a_passes == a["passes"]
                       else f" (A extrapolated: {a['passes']}-pass run x {full_a_passes}/{a['passes']}, not run)"),
               ms(t_a), ms(t_b), t_a / t_b)
    main.notes.append("B's pass columns read 'decoder step / corrector pass'. compile s = lower + compile of the "
                      "whole jitted sampler.")
    unroll_t.notes.append("Same params and keys for every unroll (last column: largest pixel difference of the "
                          "images, range [-1, 1]). Paper: unroll 1 only, to keep the CPU run short.")
    ab.notes.append("The brief measured A / B = 56.6x on a T4 GPU; on CPU the ratio is set by the FLOPs of the "
                    "two U-Nets and the number of passes.")
    return [main, unroll_t, ab]
