"""Stage `router`: the router recipe evaluated out of sample (cross-fit), the brief's tables, and the deployed router.

The recipe (ablation -> gradient boosting -> threshold) is re-run inside every training fold,
so each seed's decision comes from a router whose training and feature selection never saw it.
The deployed router (saved here, used by `pipeline.make_routed_sampler`) is the same recipe
fit on all seeds: the tables evaluate the recipe, not that file.
"""

from __future__ import annotations

import dataclasses

import numpy as np

from hybrid_jax import io
from hybrid_jax.quality import labels as labels_lib
from hybrid_jax.routing import crossfit, router as router_lib
from hybrid_jax.study.rundir import Run, Stage
from hybrid_jax.study.stages import features as features_stage
from hybrid_jax.study.stages import labels as labels_stage


def run_stage(run: Run) -> dict:
    cfg = run.cfg.router
    seeds, X, names = features_stage.load(run)
    labels, source = labels_stage.router_labels(run)
    y = labels_lib.to_targets(labels, seeds.tolist())
    study, deployed = crossfit.run_study(X, y, names, cfg, run.path("router", "fits"),
                                         n_jobs=cfg.n_jobs or None)
    router_lib.save_router(deployed, run.path("router"), cfg, candidate_features=names)
    results = {"label_source": source, "n": len(y), "n_cheap_ok": int(y.sum()), "seeds": seeds.tolist(),
               "prior": router_lib.class_prior_baseline(y), **study}
    io.write_json(run.path("router", "results.json"), results)
    io.write_npz(run.path("router", "oof.npz"), seeds=seeds, p_cheap=np.asarray(study["oof"]["p_cheap"]),
                 fold=np.asarray(study["oof"]["fold"]), y=y)
    return {"label_source": source, "kept": len(study["kept"]), "of": len(names),
            "cv_precision": study["cv"]["test_mean"]["precision"],
            "best_precision": study["best_split"]["test"]["precision"], "fits": study["fits"]}


def load_results(run: Run) -> dict:
    return io.read_json(run.path("router", "results.json"))


def load_oof(run: Run) -> dict[str, np.ndarray]:
    """Out-of-sample P(cheap_ok) per seed, its cross-fit fold and the targets it was judged against."""
    return io.read_npz(run.path("router", "oof.npz"))


def load_deployed(run: Run):
    """(TreeEnsemble, indices of its features among the candidates) of the deployed router."""
    ens, meta = router_lib.load_router(run.path("router"))
    return ens, [meta["candidate_features"].index(n) for n in ens.feature_names]


# n_jobs changes no result, so it does not invalidate the stage
STAGE = Stage("router", run_stage, config=lambda cfg: (dataclasses.replace(cfg.router, n_jobs=0),),
              after=("features", "labels"))
