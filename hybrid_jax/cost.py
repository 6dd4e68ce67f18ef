"""Cost and quality of the routing strategies: always-A, always-B, oracle (labels), learned router.

Seconds per image are measured after compilation and blocked until ready; network passes
and FLOPs per image come from the samplers' pass counts and XLA's cost analysis of one pass
of each network at batch 1 (see `timing`). Quality is the mean realism score and the
Frechet distance to held-out real images, both in the labeler's feature space.
"""

from __future__ import annotations

import jax.numpy as jnp
import numpy as np

from hybrid_jax import labeler, model_a, model_b, routing, timing
from hybrid_jax.config import Preset
from hybrid_jax.models.decoder import PATCH_DIM, SEQ_LEN, init_cache

STRATEGIES = ("always A", "always B", "oracle (labels)", "learned router")


def pass_flops(cfg: Preset, pa, pb) -> dict[str, float]:
    """FLOPs of one pass of each network at batch 1."""
    x = jnp.zeros((1, 32, 32, 3))
    t = jnp.zeros((1,), jnp.int32)
    cond = jnp.zeros((1, 32, 32, model_a.COND_CHANNELS))
    d = cfg.model_b.decoder
    decoder = model_b.make_decoder(cfg.model_b)
    cache = init_cache(1, d.num_layers, d.width, d.num_heads)
    corrector = model_b.make_corrector_unet(cfg.corrector)
    return {
        "a_unet": timing.flops(model_a.make_eps_fn(cfg.model_a), pa, x, t, cond),
        "b_ar_step": timing.flops(lambda p, c: decoder.apply({"params": p}, jnp.zeros((1, 1, PATCH_DIM)), 3, c),
                                  pb["ar"], cache),
        "b_teacher_forcing": timing.flops(lambda p: model_b.teacher_forcing(decoder, p, jnp.zeros((1, SEQ_LEN, PATCH_DIM))),
                                          pb["ar"]),
        "corrector_unet": timing.flops(lambda p: corrector.apply({"params": p}, x, t), pb["corrector"]),
    }


def image_flops(cfg: Preset, f: dict[str, float]) -> dict[str, float]:
    """FLOPs per image of Model A's and Model B's samplers, from `pass_flops` (passes x one pass:
    XLA's cost analysis counts a loop body once, not times its trip count)."""
    return {"A": model_a.passes(cfg.model_a) * f["a_unet"],
            "B": SEQ_LEN * f["b_ar_step"] + cfg.corrector.start_step * f["corrector_unet"]}


def cost_table(routed: routing.RoutedSampler, pa, pb, keys_a, keys_b, oracle_to_a: np.ndarray,
               cfg: Preset) -> dict:
    """Timed strategies on the first `cost.num_images` seeds; returns rows and the routed images."""
    n, reps = cfg.cost.num_images, cfg.cost.repeats
    ka, kb, oracle = keys_a[:n], keys_b[:n], oracle_to_a[:n]
    sa, sb = routed.sampler_a, routed.sampler_b
    k = cfg.router.prefix_steps
    f = pass_flops(cfg, pa, pb)
    probe_flops = k * f["b_ar_step"] + f["b_teacher_forcing"]
    flops_a, flops_b = image_flops(cfg, f).values()
    flops_b_rest = flops_b - k * f["b_ar_step"]
    routed_out = routed.run(pa, pb, ka, kb)
    share_router = float(routed_out.to_a.mean())
    share_oracle = float(oracle.mean())
    timings = timing.time_many({  # side by side, in rounds
        "always A": (sa.sample_keys, (pa, ka)),
        "always B": (sb.sample_keys, (pb, kb)),
        "oracle (labels)": (lambda: routing.generate_split(sa, sb, pa, pb, ka, kb, oracle), ()),
        "learned router": (lambda: routed.run(pa, pb, ka, kb).images, ()),
        "probe": (routed.probe, (pb, kb)),
    }, repeats=reps)
    passes = {"always A": sa.passes, "always B": sb.passes,
              "oracle (labels)": share_oracle * sa.passes + (1 - share_oracle) * sb.passes,
              "learned router": k + 1 + share_router * sa.passes + (1 - share_router) * (sb.passes - k),
              "probe": k + 1}
    flops = {"always A": flops_a, "always B": flops_b,
             "oracle (labels)": share_oracle * flops_a + (1 - share_oracle) * flops_b,
             "learned router": probe_flops + share_router * flops_a + (1 - share_router) * flops_b_rest,
             "probe": probe_flops}
    shares = {"always A": 1.0, "always B": 0.0, "oracle (labels)": share_oracle, "learned router": share_router,
              "probe": float("nan")}
    t_a = timings["always A"].median_s / n
    rows = {name: {"seconds_per_image": tm.median_s / n, "compile_seconds": tm.compile_s, "passes_per_image": passes[name],
                   "flops_per_image": flops[name], "share_to_a": shares[name],
                   "savings_vs_a": 1.0 - (tm.median_s / n) / t_a}
            for name, tm in timings.items()}
    return {"n_images": n, "repeats": reps, "pass_flops": f, "rows": rows}, routed_out


def consistency(routed_out: routing.RoutedOutput, seeds: dict) -> dict:
    """Max |routed image - the model's own image| for the seeds of each side (should be ~0)."""
    n = len(routed_out.images)
    ref = np.where(routed_out.to_a[:, None, None, None], seeds["images_a"][:n], seeds["images_b"][:n])
    diff = np.abs(routed_out.images - ref).max(axis=(1, 2, 3))
    return {"n": n, "max_abs_diff_a": float(diff[routed_out.to_a].max(initial=0.0)),
            "max_abs_diff_b": float(diff[~routed_out.to_a].max(initial=0.0))}


def quality_table(scores: dict, to_a: np.ndarray, oracle_to_a: np.ndarray) -> dict:
    """Mean realism score and Frechet distance to held-out real images, per strategy, over all seeds."""
    pick = lambda m, a, b: np.where(m[:, None] if a.ndim == 2 else m, a, b)
    choice = {"always A": np.ones_like(to_a), "always B": np.zeros_like(to_a),
              "oracle (labels)": oracle_to_a, "learned router": to_a}
    out = {}
    for name, m in choice.items():
        m = m.astype(bool)
        feats = pick(m, scores["feats_a"], scores["feats_b"])
        out[name] = {"mean_realism": float(pick(m, scores["score_a"], scores["score_b"]).mean()),
                     "frechet_distance": labeler.frechet_distance(feats, scores["feats_real"])}
    out["real (held out)"] = {"mean_realism": float(scores["score_real"].mean()), "frechet_distance": None}
    return out
