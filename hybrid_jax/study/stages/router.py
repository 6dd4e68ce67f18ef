"""Stage `router`: the router recipe evaluated out of sample (cross-fit), the brief's tables, and the deployed router.

The recipe (ablation -> gradient boosting -> threshold) is re-run inside every training fold,
so each seed's decision comes from a router whose training and feature selection never saw it.
The deployed router (saved here, used by `pipeline.make_routed_sampler`) is the same recipe
fit on all seeds: the tables evaluate the recipe, not that file. Beside it, the ceiling of any probe
of B's prefix (`hybrid_jax.routing.ceiling`): every seed's prefix finished `router.continuations` more
times with fresh keys and scored by the labels stage's scorer. With `router.denoise` every fit of the
recipe learns the mean quality of those finishes (`crossfit.denoised_targets`) instead of the labels.
"""

from __future__ import annotations

import dataclasses

import numpy as np

from hybrid_jax import generators, io, stats
from hybrid_jax.data import fixed_batches
from hybrid_jax.quality import labels as labels_lib
from hybrid_jax.routing import ceiling, crossfit, router as router_lib
from hybrid_jax.study.rundir import Run, Stage
from hybrid_jax.study.stages import features as features_stage
from hybrid_jax.study.stages import labels as labels_stage
from hybrid_jax.study.stages import seeds as seeds_stage
from hybrid_jax.study.stages import train


def continuation_scores(run: Run, seeds: np.ndarray) -> np.ndarray:
    """[1 + router.continuations, n] quality of B's image of each seed (row 0, the labels stage's) and of its
    prefix finished again with fresh keys (`ceiling.continue_prefix`), in the seeds stage's batches."""
    cfg = run.cfg
    scored = labels_stage.load_scores(run)
    if not np.array_equal(scored["seeds"], seeds):
        raise ValueError("the labels stage scored other seeds than the features stage probed; rerun both")
    _, sampler = seeds_stage.samplers(cfg)
    params = train.restore_model_b(run)
    keys = generators.seed_stream(seeds, cfg.seeds.base_seed, "model_b")
    classes = generators.seed_labels(seeds, cfg.data.num_classes)
    images = np.zeros((cfg.router.continuations, len(seeds), *cfg.geometry.image_shape), np.float32)
    for _, part, padded in fixed_batches(np.arange(len(seeds)), cfg.seeds.batch_size):
        prefix = sampler.ar_prefix(params, keys[padded], cfg.router.prefix_steps, classes[padded])
        for r, x in enumerate(ceiling.continue_prefix(sampler.finish, params, prefix, cfg.router.continuations)):
            images[r, part] = np.asarray(x)[: len(part)]
    fresh = labels_stage.score_images(run, images.reshape(-1, *images.shape[2:]))[0].reshape(images.shape[:2])
    return np.vstack([scored["score_b"][None], fresh])


def run_stage(run: Run) -> dict:
    cfg = run.cfg.router
    seeds, X, names = features_stage.load(run)
    labels, source = labels_stage.router_labels(run)
    y = labels_lib.to_targets(labels, seeds.tolist())
    scores = continuation_scores(run, seeds) if cfg.continuations else None
    study, deployed = crossfit.run_study(X, y, names, cfg, run.path("router", "fits"), n_jobs=cfg.n_jobs or None,
                                         quality=scores.mean(0) if cfg.denoise else None)
    router_lib.save_router(deployed, run.path("router"), cfg, candidate_features=names)
    results = {"label_source": source, "n": len(y), "n_cheap_ok": int(y.sum()), "seeds": seeds.tolist(),
               "prior": router_lib.class_prior_baseline(y), "denoised": cfg.denoise, **study}
    if scores is not None:
        io.write_npz(run.path("router", "continuations.npz"), seeds=seeds, scores=scores)
        folds = np.asarray(study["oof"]["fold"])
        results["ceiling"] = ceiling.summarize(
            scores, y, np.asarray(study["oof"]["p_cheap"]), learned=ceiling.learned_scores(X, scores, y, folds, cfg),
            seed=cfg.seed, boot=stats.BootstrapConfig(n_resamples=run.cfg.cost.bootstrap))
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


# n_jobs changes no result, so it does not invalidate the stage. Version 1: the probe's ceiling (`ceiling`); 2: with
# the router's learner on other targets
STAGE = Stage("router", run_stage, config=lambda cfg: (dataclasses.replace(cfg.router, n_jobs=0),
                                                        cfg.cost.bootstrap),
              after=("features", "labels"), version=2)
