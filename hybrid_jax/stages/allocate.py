"""Stage `allocate`: every option's image for every seed, and per-seed compute allocation among them.

Options are the preset's step budgets of Model A and corrector depths of Model B
(`generators.options`); each option's images are generated in fixed batches and stored per
option (resumable), scored by the labels stage's scorer, timed under the routed stage's
batching policy, and handed to `allocation.evaluate` with the router's cross-fit folds.
"""

from __future__ import annotations

import logging
import re

import numpy as np

from hybrid_jax import allocation, cost, evaluation, generators, io, progress
from hybrid_jax.rundir import Run, Stage, done_record
from hybrid_jax.stages import features as features_stage
from hybrid_jax.stages import labels as labels_stage
from hybrid_jax.stages import routed as routed_stage
from hybrid_jax.stages import router as router_stage
from hybrid_jax.stages import seeds as seeds_stage
from hybrid_jax.stages import train

log = logging.getLogger("hybrid_jax.stages.allocate")


def _slug(name: str) -> str:
    return re.sub(r"[^a-z0-9]+", "_", name.lower()).strip("_")


def _made_by_seeds_stage(run: Run) -> dict[str, np.ndarray]:
    """The brief's two options' images, which the seeds stage already made for every seed."""
    a, b = generators.binary(run.cfg)
    seeds = seeds_stage.load(run)
    return {a.name: seeds["images_a"], b.name: seeds["images_b"]}


def _images(run: Run, g: generators.Generator, params, seeds: np.ndarray, made: dict) -> np.ndarray:
    if g.name in made:
        return made[g.name]
    # kept per seeds-stage fingerprint (seeds config + trained models): other seeds never reuse them
    path = run.path("allocate", "options", done_record(run, "seeds")["fingerprint"], f"{_slug(g.name)}.npz")
    if not path.exists():
        out = np.zeros((len(seeds), 32, 32, 3), np.float32)
        for start, chunk, padded in seeds_stage.fixed_batches(seeds, run.cfg.seeds.batch_size):
            keys = generators.seed_stream(padded, run.cfg.seeds.base_seed, g.model)
            out[start:start + len(chunk)] = np.asarray(g.sample_keys(params, keys))[: len(chunk)]
        io.write_npz(path, seeds=seeds, images=out)
    return io.read_npz(path)["images"]


def _seconds(run: Run, opts, trained, seeds: np.ndarray) -> np.ndarray:
    """Median seconds per image of each option, every one in batches of cost.batch_size, charged per real image."""
    c = run.cfg.cost
    sel = np.arange(min(c.num_images, len(seeds)))
    contenders = {}
    for g in opts:
        keys = generators.seed_stream(seeds, run.cfg.seeds.base_seed, g.model)
        contenders[g.name] = lambda g=g, keys=keys: cost._fixed(lambda k: g.sample_keys(trained[g.model], k),
                                                                keys, sel, c.batch_size)
    rows = cost.measure(contenders, len(sel), c.repeats)
    return np.array([rows[g.name]["seconds_per_image"] for g in opts])


def _options(run: Run, opts, trained, seeds) -> allocation.Options:
    f = cost.pass_flops(run.cfg, trained["model_a"], trained["model_b"])
    k = run.cfg.router.prefix_steps
    scratch = np.array([[g.passes, g.flops(f), 0.0] for g in opts])
    scratch[:, 2] = _seconds(run, opts, trained, seeds)
    timing = routed_stage.load(run)
    probe = np.array([timing["units"]["probe"][u] for u in ("passes", "flops", "seconds")])
    prefix = np.array([k, k * f["b_ar_step"], timing["timing"]["rows"]["AR prefix"]["seconds_per_image"]])
    resumes = np.array([[g.model == "model_b"] for g in opts])  # B's options resume from the probe's prefix
    return allocation.Options(tuple(g.name for g in opts), scratch, scratch + probe - resumes * prefix)


def run_stage(run: Run) -> dict:
    cfg = run.cfg
    opts = generators.options(cfg)
    trained = {"model_a": train.restore_params(run, "model_a"), "model_b": train.restore_model_b(run)}
    seeds = seeds_stage.load_seed_ids(run)
    made = _made_by_seeds_stage(run)
    scored = [labels_stage.score_images(run, _images(run, g, trained[g.model], seeds, made))
              for g in progress.track(opts, len(opts), "allocate", "option", log)]
    quality, feats = np.stack([s for s, _ in scored], 1), np.stack([f for _, f in scored], 1)
    oof = router_stage.load_oof(run)
    _, X, _ = features_stage.load(run)
    a, b = (next(i for i, g in enumerate(opts) if g.name == p.name) for p in generators.binary(cfg))
    result = allocation.evaluate(
        quality, _options(run, opts, trained, seeds), X, oof["fold"], labels_stage.tau(run), binary=(a, b),
        p_cheap=oof["p_cheap"], router_threshold=cfg.router.threshold, feats=feats,
        feats_real=labels_stage.load_scores(run)["feats_real"], seed=cfg.router.seed,
        boot=evaluation.BootstrapConfig(n_resamples=cfg.cost.bootstrap))
    io.write_json(run.path("allocate", "results.json"), result)
    best = max((p for p in result["points"] if p["policy"] == "learned allocation"), key=lambda p: p["quality"])
    return {"options": len(opts), "learned_best_quality": best["quality"], "flops_savings": best["flops_savings"]}


def load(run: Run) -> dict:
    return io.read_json(run.path("allocate", "results.json"))


STAGE = Stage("allocate", run_stage, config=lambda cfg: (cfg.allocation, cfg.cost, cfg.seeds.batch_size),
              after=("seeds", "labels", "router", "routed"))
