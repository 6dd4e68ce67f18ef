"""(d) Router probe per image: B's first k AR steps + features + router, in-graph (JAX trees) vs host (sklearn).

in-graph: one jitted function ar_prefix(k) -> features.compute -> jax_predict_proba.
host: the jitted ar_prefix(k) -> features.compute, copied to NumPy, then the library's
`router.predict_proba` (sklearn GradientBoostingClassifier.predict_proba on the z-scored
features). The router is fitted on random features (the preset's n_estimators and
max_depth: only the trees' shape matters for the time). The router-only rows time the
two routers alone on the same features (device array for JAX; NumPy for sklearn).
"""

from __future__ import annotations

import functools

import jax
import numpy as np

from benchmarks.samplers import perturbed
from benchmarks.timing import Table, compile_jax, ms, time_many
from hybrid_jax import xla
from hybrid_jax.config import get_preset
from hybrid_jax.generators import model_b
from hybrid_jax.probe import features
from hybrid_jax.routing import router as router_lib

PAPER_BIG_BATCH_REPEATS = 3  # a paper batch-256 probe takes seconds per call on a 2-core CPU


def fit_random_router(preset, n: int = 512, seed: int = 0):
    names = features.feature_names(preset.model_b.decoder.num_layers)
    rng = np.random.default_rng(seed)
    X = rng.standard_normal((n, len(names)))
    y = (X[:, 0] + X[:, 1] * X[:, 2] + 0.5 * rng.standard_normal(n) > 0).astype(np.int64)
    return router_lib.fit(X, y, preset.router, names)


def run(presets: list[str], repeats: int, batches=(1, 256)) -> list[Table]:
    table = Table("Router probe per image: ar_prefix(k) + features + router",
                  ["preset", "batch", "trees x depth", "prefix+features ms/img", "+ JAX router in-graph ms/img",
                   "+ sklearn on host ms/img", "host / in-graph", "JAX router alone ms/img",
                   "sklearn alone ms/img", "max |p_jax - p_sklearn|"])
    table.notes.append("k = router.prefix_steps (12). The probe overhead of a router = its column minus the "
                       "prefix+features column. ar_prefix includes its teacher-forcing pass for the "
                       "self-consistency features. The brief's figure: 2.3 ms/img probe overhead on a T4. Paper at batch "
                       f"256: {PAPER_BIG_BATCH_REPEATS} repeats at most (seconds per call on this CPU).")
    for name in presets:
        preset = get_preset(name)
        k = preset.router.prefix_steps
        router = fit_random_router(preset)
        ens = router_lib.export_trees(router)
        key = jax.random.key(0)
        params = perturbed(jax.jit(functools.partial(model_b.init_params, preset.model_b, preset.corrector))(key))
        sampler = model_b.make_sampler(preset.model_b, preset.corrector)
        g = preset.geometry
        probe = xla.jit(lambda p, keys: features.compute(sampler.ar_prefix(p, keys, k), g))
        in_graph = xla.jit(lambda p, keys, e: router_lib.jax_predict_proba(
            e, features.compute(sampler.ar_prefix(p, keys, k), g)))
        jax_router = xla.jit(router_lib.jax_predict_proba)
        for b in batches:
            keys = jax.random.split(key, b)
            probe_exec, _ = compile_jax(probe, params, keys)

            def host(p=params, keys=keys):
                return router_lib.predict_proba(router, np.asarray(probe_exec(p, keys)))

            feats = probe_exec(params, keys)
            feats_np = np.asarray(feats)
            reps = min(repeats, PAPER_BIG_BATCH_REPEATS) if name == "paper" and b > 1 else repeats
            res = time_many({"probe": (probe_exec, (params, keys)), "in_graph": (in_graph, (params, keys, ens)),
                             "host": (host, ()), "jax_router": (jax_router, (ens, feats)),
                             "sklearn": (lambda: router_lib.predict_proba(router, feats_np), ())},
                            repeats=reps)
            diff = float(np.max(np.abs(np.asarray(res["jax_router"].compiled(ens, feats))
                                       - router_lib.predict_proba(router, feats_np))))
            per = {n: ms(r.median_s) / b for n, r in res.items()}
            table.add(name, b, f"{ens.feature.shape[0]} x {ens.depth}", per["probe"], per["in_graph"], per["host"],
                      res["host"].median_s / res["in_graph"].median_s, per["jax_router"], per["sklearn"], diff)
            print(table.row_text(), flush=True)
    return [table]
