"""Stage `allocate`: every option's image for every seed, and per-seed compute allocation among them.

Options are the preset's step budgets of Model A and corrector depths of Model B
(`generators.options`); each option's images are generated in fixed batches and stored per
option (resumable), scored by the labels stage's scorer, timed under the routed stage's
batching policy, and handed to `allocation.evaluate` with the router's cross-fit folds and the
features of A's own probe (for the options that continue it and the cascade).
"""

from __future__ import annotations

import logging
import re
from pathlib import Path

import numpy as np

from hybrid_jax import allocation, cost, evaluation, generators, io, labeling, policy, progress
from hybrid_jax import labels as labels_lib
from hybrid_jax import features as features_lib
from hybrid_jax.rundir import Run, Stage, done_record, file_hash
from hybrid_jax.stages import features as features_stage
from hybrid_jax.stages import labels as labels_stage
from hybrid_jax.stages import routed as routed_stage
from hybrid_jax.stages import router as router_stage
from hybrid_jax.stages import seeds as seeds_stage
from hybrid_jax.stages import train

log = logging.getLogger("hybrid_jax.stages.allocate")


def _slug(name: str) -> str:
    return re.sub(r"[^a-z0-9]+", "_", name.lower()).strip("_")


def _made_by_seeds_stage(run: Run) -> dict[str, str]:
    """The brief's two options (A first) -> the seeds stage's array of their images of every seed."""
    return dict(zip((o.name for o in generators.binary(run.cfg)), ("images_a", "images_b")))


def _image_file(run: Run, g: generators.Generator, made: dict[str, str]) -> tuple[Path, str]:
    """Where option `g`'s images of every seed are kept: (file relative to the work dir, array name). The brief's
    two options' are the seeds stage's (`made`); the others' are kept per seeds-stage fingerprint (seeds config +
    trained models), so other seeds never reuse them."""
    if g.name in made:
        return labeling.SEEDS_FILE, made[g.name]
    return Path("allocate", "options", done_record(run, "seeds")["fingerprint"], f"{_slug(g.name)}.npz"), "images"


def _images(run: Run, g: generators.Generator, params, seeds: np.ndarray, made: dict[str, str]) -> np.ndarray:
    path, array = _image_file(run, g, made)
    if run.path(path).exists():
        return io.read_npz(run.path(path))[array]
    images = _each_seed(run, g, params, seeds)
    io.write_npz(run.path(path), seeds=seeds, images=images)
    return images


def _write_labeling_manifest(run: Run, opts, made: dict[str, str]) -> None:
    """The labeling page's list of each option's image file (`labeling.load_options`): the brief's Model A (full
    budget, `made`'s first) first, the reference people compare every other option with, then the others in the
    study's order."""
    reference = next(iter(made))
    ordered = sorted(opts, key=lambda g: g.name != reference)
    io.write_json(run.path(labeling.OPTIONS_MANIFEST), {
        "seeds_file": str(labeling.SEEDS_FILE),
        "options": [dict(zip(("name", "file", "array"), (g.name, *map(str, _image_file(run, g, made)))))
                    for g in ordered]})


def _human_verdicts(run: Run, opts, seeds: np.ndarray) -> np.ndarray | None:
    """[n, K] people's verdicts from the options labeling page (1 acceptable, 0 not, NaN not labeled); None
    without the file."""
    path = run.path(labeling.OPTIONS_FILE)
    if not path.exists():
        return None
    names = [g.name for g in opts]
    known = {(int(s), name) for s in seeds for name in names}
    rows = labels_lib.read_keyed_labels(path, labels_lib.OPTION_KEY, known=known)[0]
    row = {int(s): i for i, s in enumerate(seeds)}
    human = np.full((len(seeds), len(opts)), np.nan)
    for (seed, name), label in rows.items():
        human[row[seed], names.index(name)] = label == labels_lib.POSITIVE
    return human


def _each_seed(run: Run, g: generators.Generator, params, seeds: np.ndarray) -> np.ndarray:
    """Option `g`'s image of every seed, in batches of cost.batch_size: the shape `_seconds` times it at, so
    generating and timing an option share one compiled program."""
    return generators.generate((g,), {g.model: params}, seeds, np.zeros(len(seeds), int),
                               base_seed=run.cfg.seeds.base_seed, batch_size=run.cfg.cost.batch_size,
                               num_classes=run.cfg.data.num_classes)


def _a_probe_features(run: Run, params, seeds: np.ndarray) -> np.ndarray:
    """[n, len(features.A_PROBE)] features of A's own probe on each seed (the probe every "after probe" option runs)."""
    probe = generators.Generator("A's probe", "model_a", generators.a_probe_features(run.cfg), {})
    return _each_seed(run, probe, params, seeds)


def _seconds(run: Run, opts, trained, seeds: np.ndarray) -> np.ndarray:
    """Median seconds per image of each option, every one in batches of cost.batch_size, charged per real image.
    The brief's two options were timed by the routed stage under this same policy (its "always A/B" rows):
    on one device their seconds are taken from there, not measured twice (at paper scale, minutes of A)."""
    c = run.cfg.cost
    sel = np.arange(min(c.num_images, len(seeds)))
    timing = routed_stage.load(run)["timing"]
    same = run.mesh is None and (timing["n_images"], timing["batch_size"], timing["repeats"]) == (
        len(sel), c.batch_size, c.repeats)
    known = {g.name: timing["rows"][f"always {g.name}"] for g in generators.binary(run.cfg)} if same else {}
    contenders = {}
    for g in (g for g in opts if g.name not in known):
        keys = generators.seed_stream(seeds, run.cfg.seeds.base_seed, g.model)
        contenders[g.name] = lambda g=g, keys=keys: cost._fixed(
            lambda k, labels: g.sample_keys(trained[g.model], k, labels), keys, sel, c.batch_size,
            generators.seed_labels(seeds, run.cfg.data.num_classes))
    rows = {**known, **cost.measure(contenders, len(sel), c.repeats)}
    return np.array([rows[g.name]["seconds_per_image"] for g in opts])


def _options(run: Run, opts, trained, seeds) -> allocation.Options:
    timing = routed_stage.load(run)
    f = timing["pass_flops"]  # XLA's count of one pass of each network, made once by the routed stage
    k = run.cfg.router.prefix_steps
    scratch = np.array([[g.passes, g.flops(f), 0.0] for g in opts])
    scratch[:, 2] = _seconds(run, opts, trained, seeds)
    probe = np.array([timing["units"]["probe"][u] for u in ("passes", "flops", "seconds")])
    prefix = np.array([k, k * f["b_ar_step"], timing["timing"]["rows"]["AR prefix"]["seconds_per_image"]])
    resumes = np.array([[g.probe == "B"] for g in opts])  # B's options resume from the probe's prefix
    return allocation.Options(tuple(g.name for g in opts), scratch, scratch + probe - resumes * prefix,
                              probe=tuple(g.probe for g in opts))


def run_stage(run: Run) -> dict:
    cfg = run.cfg
    opts = generators.options(cfg) + generators.probed_options(cfg)
    trained = {"model_a": train.restore_params(run, "model_a"), "model_b": train.restore_model_b(run)}
    seeds = seeds_stage.load_seed_ids(run)
    made = _made_by_seeds_stage(run)
    scored = [labels_stage.score_images(run, _images(run, g, trained[g.model], seeds, made))
              for g in progress.track(opts, len(opts), "allocate", "option", log)]
    _write_labeling_manifest(run, opts, made)
    human = _human_verdicts(run, opts, seeds)
    quality, feats = np.stack([s for s, _ in scored], 1), np.stack([f for _, f in scored], 1)
    oof = router_stage.load_oof(run)
    _, X, names = features_stage.load(run)
    X_a = _a_probe_features(run, trained["model_a"], seeds)
    a, b = (next(i for i, g in enumerate(opts) if g.name == p.name) for p in generators.binary(cfg))
    options = _options(run, opts, trained, seeds)
    t = cfg.allocation.threshold
    result = allocation.evaluate(
        quality, options, X, oof["fold"], labels_stage.tau(run), binary=(a, b),
        p_cheap=oof["p_cheap"], router_threshold=cfg.router.threshold, feats=feats,
        feats_real=labels_stage.load_scores(run)["feats_real"], seed=cfg.router.seed,
        boot=evaluation.BootstrapConfig(n_resamples=cfg.cost.bootstrap), X_a=X_a,
        thresholds=sorted({*allocation.THRESHOLDS, t}),
        classes=allocation.Classes(seeds_stage.load(run)["labels"], cfg.data.classes) if cfg.data.num_classes > 1
        else None, human=human)
    deployed = policy.fit({"B": X, "A": X_a}, {"B": names, "A": features_lib.A_PROBE}, quality, options,
                          labels_stage.tau(run), t, seed=cfg.router.seed, human=human)
    name = "cascade" if len(options.columns("A")) else "learned allocation"
    result["deployed"] = {"policy": name, "threshold": t, "fitted_on": "every seed (in sample; its out-of-sample "
                          "figures are the cross-fitted point of the same policy at this threshold)"}
    policy.save(deployed, run.path("allocate", "policy"), policy_name=name)
    io.write_json(run.path("allocate", "results.json"), result)
    best = {policy: max((p for p in result["points"] if p["policy"] == policy), key=lambda p: p["quality"])
            for policy in ("learned allocation", "cascade")}
    return {"options": len(opts), **{f"{_slug(k)}_best_quality": p["quality"] for k, p in best.items()},
            **{f"{_slug(k)}_flops_savings": p["flops_savings"] for k, p in best.items()}}


def load(run: Run) -> dict:
    return io.read_json(run.path("allocate", "results.json"))


def load_policy(run: Run) -> policy.Policy:
    """The deployed allocation policy of a finished work dir (`policy.choose` applies it)."""
    return policy.load(run.path("allocate", "policy"))[0]


# version 1: A's probe, the probed options and the cascade; 2: the deployed policy saved; 3: the brief's two
# options' seconds from the routed stage, per-class rows with several classes; 4: the labeling page's manifest,
# people's verdicts per (seed, option) where given; 5: options generated at the batch they are timed at, the
# networks' FLOPs per pass from the routed stage
STAGE = Stage("allocate", run_stage, config=lambda cfg: (cfg.allocation, cfg.cost, cfg.seeds.batch_size),
              after=("seeds", "labels", "router", "routed"), version=5,
              inputs=lambda run: (file_hash(run.path(labeling.OPTIONS_FILE)),))
