"""(e) Routed pipeline throughput vs the ideal mix share_A x t_A + share_B x t_B.

The routed pipeline probes B's first k AR steps (features + JAX router in one jitted graph),
then finishes the B seeds from their cached prefix and runs A on the rest, in padded buckets.
Its time per image is set beside the ideal mix of the two samplers alone, measured side by
side in one process at the share to A the router actually chose. The router is fitted on
random features (only its routing share matters here), the models are freshly initialised.
"""

from __future__ import annotations

import functools

import jax

from benchmarks.router_probe import fit_random_router
from benchmarks.samplers import perturbed
from benchmarks.timing import Table, ms, time_many
from hybrid_jax import routing
from hybrid_jax.config import get_preset
from hybrid_jax.generators import model_a, model_b
from hybrid_jax.probe import features
from hybrid_jax.routing import router as router_lib

BATCH = 32


def run(presets: list[str], repeats: int) -> list[Table]:
    table = Table(f"Routed pipeline vs the ideal mix (batch {BATCH})",
                  ["preset", "share to A", "always A ms/img", "always B ms/img", "ideal mix ms/img",
                   "routed ms/img", "routed / ideal"])
    table.notes.append("ideal mix = share_A x t_A + (1 - share_A) x t_B with t_A, t_B the samplers alone; the routed "
                       "pipeline also pays the probe and reuses B's prefix. Paper preset skipped on CPU: Model A's "
                       "800 passes take over a minute per image here.")
    for name in presets:
        if name == "paper":
            continue
        preset = get_preset(name)
        key = jax.random.key(0)
        pa = perturbed(jax.jit(functools.partial(model_a.init_params, preset.model_a))(key))
        pb = perturbed(jax.jit(functools.partial(model_b.init_params, preset.model_b, preset.corrector))(key))
        sa, sb = model_a.make_sampler(preset.model_a), model_b.make_sampler(preset.model_b, preset.corrector)
        ens = router_lib.export_trees(fit_random_router(preset))
        idx = list(range(len(features.feature_names(preset.model_b.decoder.num_layers))))
        routed = routing.make_routed_sampler(sa, sb, ens, idx, preset.router.prefix_steps)
        keys_a, keys_b = routing.seed_keys(range(BATCH), preset.seeds.base_seed)
        share = float(routed.run(pa, pb, keys_a, keys_b).to_a.mean())  # also compiles the bucket shapes it uses
        t = time_many({"A": (sa.sample_keys, (pa, keys_a)), "B": (sb.sample_keys, (pb, keys_b)),
                       "routed": (lambda: routed.run(pa, pb, keys_a, keys_b).images, ())}, repeats=repeats)
        t_a, t_b, t_r = (t[k].median_s / BATCH for k in ("A", "B", "routed"))
        ideal = share * t_a + (1 - share) * t_b
        table.add(name, share, ms(t_a), ms(t_b), ms(ideal), ms(t_r), t_r / ideal)
    return [table]
