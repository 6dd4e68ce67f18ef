"""Stage `allocate`: every option's image for every seed, and per-seed compute allocation among them.

Options are the preset's step budgets of Model A and corrector depths of Model B
(`generators.options`); each option's images are generated in fixed batches and stored per
option (resumable), scored by the labels stage's scorer, timed by their own generation batches
under the routed stage's batching policy (no image is made twice), and handed to
`allocation.evaluate` with the router's cross-fit folds and the features of A's own probe, run
once per seed and continued by every "after probe" option.
"""

from __future__ import annotations

import dataclasses
import logging
import re
from pathlib import Path

import numpy as np

from hybrid_jax import generators, io, labeling, progress, stats, timing
from hybrid_jax.data import fixed_batches
from hybrid_jax.quality import labels as labels_lib
from hybrid_jax.routing import allocation, policy
from hybrid_jax.study import cost
from hybrid_jax.study.rundir import Run, Stage, done_record, file_hash, fingerprint
from hybrid_jax.study.stages import distill as distill_stage
from hybrid_jax.study.stages import features as features_stage
from hybrid_jax.study.stages import labels as labels_stage
from hybrid_jax.study.stages import routed as routed_stage
from hybrid_jax.study.stages import router as router_stage
from hybrid_jax.study.stages import seeds as seeds_stage
from hybrid_jax.study.stages import train

log = logging.getLogger("hybrid_jax.stages.allocate")


def _slug(name: str) -> str:
    return re.sub(r"[^a-z0-9]+", "_", name.lower()).strip("_")


def _made_by_seeds_stage(run: Run) -> tuple[str, ...]:
    """The brief's two options (A first), whose images of every seed the seeds stage keeps under their names."""
    return tuple(o.name for o in generators.binary(run.cfg))


def _made_by(run: Run, g: generators.Generator) -> tuple[str, ...]:
    """The stages whose params option `g` samples with: its family's training stages (and `distill` for a student)."""
    distilled = {d.name: f for f, d in generators.distillations(run.cfg)}
    family = distilled.get(g.model) or generators.registry.by_name(run.cfg, g.model)
    return (*(n.name for n in family.networks), *(("distill",) if g.model in distilled else ()))


def _image_file(run: Run, g: generators.Generator, made: tuple[str, ...]) -> tuple[Path, str]:
    """Where option `g`'s images of every seed are kept: (file relative to the work dir, array name). The brief's
    two options' are the seeds stage's (`made`); the others' are kept per fingerprint of the seeds stage (its seeds)
    and of the stages that trained `g`'s params, so other seeds or a retrained network never reuse them."""
    if g.name in made:
        return labeling.SEEDS_FILE, g.name
    key = fingerprint(*(done_record(run, stage)["fingerprint"] for stage in ("seeds", *_made_by(run, g))))
    return Path("allocate", "options", key, f"{_slug(g.name)}.npz"), "images"


def _images(run: Run, g: generators.Generator, params, seeds: np.ndarray, made: tuple[str, ...],
            probe=None) -> tuple[np.ndarray, np.ndarray | None]:
    """Option `g`'s image of every seed and each generation batch's seconds (None for the seeds stage's images,
    which the routed stage timed), made once and kept: a rerun reads them."""
    path, array = _image_file(run, g, made)
    kept = io.read_npz(run.path(path)) if run.path(path).exists() else {}
    if array in kept and (g.name in made or "batch_seconds" in kept):
        return kept[array], kept.get("batch_seconds")
    images, seconds = _each_seed(run, g, params, seeds, probe)
    io.write_npz(run.path(path), seeds=seeds, images=images, batch_seconds=seconds)
    return images, seconds


def _write_labeling_manifest(run: Run, opts, made: tuple[str, ...]) -> None:
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


def _each_seed(run: Run, g: generators.Generator, params, seeds: np.ndarray, probe=None
               ) -> tuple[np.ndarray, np.ndarray]:
    """Option `g`'s image of every seed in batches of cost.batch_size (continuing `probe`'s state, that of the family
    probe `g` continues, where given), and each batch's seconds: the first batch compiles, the others are the
    option's timing sample (`_per_image`)."""
    images, seconds = np.zeros((len(seeds), *run.cfg.geometry.image_shape), np.float32), []
    for part, x, dt in generators.batches(g, params, seeds, np.arange(len(seeds)), base_seed=run.cfg.seeds.base_seed,
                                          batch_size=run.cfg.cost.batch_size, num_classes=run.cfg.data.num_classes,
                                          probe=probe):
        images[part], seconds = x, [*seconds, dt]
    return images, np.asarray(seconds)


def _per_image(batch_seconds: np.ndarray, batch_size: int) -> float:
    """Seconds per image from generation batches: the median batch after the first (which compiles) over the
    batch size (a padded batch costs what a full one does, as every strategy is charged; `hybrid_jax.study.cost`)."""
    return float(np.median(batch_seconds[1:] if len(batch_seconds) > 1 else batch_seconds)) / batch_size


@dataclasses.dataclass(frozen=True)
class _Probed:
    """A family probe run on every seed: its state (which its "after probe" options continue), its features [n, F]
    and each batch's seconds."""

    state: object
    features: np.ndarray
    seconds: np.ndarray


def _probe(run: Run, fam: generators.Family, probe: generators.Probe, params, seeds: np.ndarray) -> _Probed:
    """`probe` on every seed (its family's seed stream) in batches of cost.batch_size."""
    b = run.cfg.cost.batch_size
    states, feats, seconds = [], [], []
    for _, part, padded in fixed_batches(np.arange(len(seeds)), b):
        (state, f), dt = timing.timed(
            probe.run, params, generators.stream_keys(seeds[padded], run.cfg.seeds.base_seed, fam.stream),
            generators.seed_labels(seeds[padded], run.cfg.data.num_classes))
        states.append(state.take(np.arange(len(part))))
        feats.append(np.asarray(f)[: len(part)])
        seconds.append(dt)
    return _Probed(type(states[0]).concatenate(states), np.concatenate(feats), np.asarray(seconds))


def _seconds(run: Run, opts, generated: dict[str, np.ndarray | None], trained, seeds: np.ndarray,
             probed: dict[str, _Probed], routed: dict, made: tuple[str, ...]) -> np.ndarray:
    """Seconds per image of each option from scratch, every one in batches of cost.batch_size, charged per image.
    The options made here are timed by their own generation batches (an "after probe" option: its family's probe
    plus its finish); the brief's two by the routed stage under this same policy (its "always A/B" rows), or, where the
    routed stage timed them at another batch (over a mesh), on its fixed sample here."""
    c = run.cfg.cost
    timing_ = routed["timing"]
    same = run.mesh is None and timing_["batch_size"] == c.batch_size
    known = {name: timing_["rows"][f"always {name}"]["seconds_per_image"] for name in made if same}
    known.update({g.name: _per_image(generated[g.name], c.batch_size)
                  + (_per_image(probed[g.probe].seconds, c.batch_size) if g.probe in probed else 0.0)
                  for g in opts if generated[g.name] is not None})
    sel = np.arange(min(c.num_images, len(seeds)))
    contenders = {}
    for g in (g for g in opts if g.name not in known):
        keys = generators.stream_keys(seeds, run.cfg.seeds.base_seed, g.stream)
        contenders[g.name] = lambda g=g, keys=keys: cost.charged_seconds(
            lambda k, labels: g.sample_keys(trained[g.model], k, labels), keys, sel, c.batch_size,
            generators.seed_labels(seeds, run.cfg.data.num_classes))
    known.update({k: r["seconds_per_image"] for k, r in cost.measure(contenders, len(sel), c.repeats).items()})
    return np.array([known[g.name] for g in opts])


def _options(run: Run, opts, seconds: np.ndarray, timing: dict, trained: dict) -> allocation.Options:
    # XLA's count of one pass of each network: the brief's pair's made once by the routed stage, others' here
    f = {**cost.pass_flops(run.cfg, {k: v for k, v in trained.items() if k not in generators.BRIEF_PAIR}),
         **timing["pass_flops"]}
    k = run.cfg.router.prefix_steps
    scratch = np.array([[g.passes, g.flops(f), 0.0] for g in opts])
    scratch[:, 2] = seconds
    probe = np.array([timing["units"]["probe"][u] for u in ("passes", "flops", "seconds")])
    prefix = np.array([k, k * f["b_ar_step"], timing["timing"]["rows"]["AR prefix"]["seconds_per_image"]])
    resumes = np.array([[g.probe == allocation.ROUTER_PROBE] for g in opts])  # B's resume the router's prefix
    return allocation.Options(tuple(g.name for g in opts), scratch, scratch + probe - resumes * prefix,
                              probe=tuple(g.probe for g in opts))


def run_stage(run: Run) -> dict:
    cfg = run.cfg
    probes = generators.probes(cfg)
    opts = generators.allocation_options(cfg)
    trained = {f.name: train.restore_option_params(run, f.name) for f in generators.families(cfg)}
    trained.update(distill_stage.trained_params(run))
    seeds = seeds_stage.load_seed_ids(run)
    made = _made_by_seeds_stage(run)
    probed = {p.name: _probe(run, fam, p, trained[fam.name], seeds) for fam, p in probes}
    scored, generated = [], {}
    for g in progress.track(opts, len(opts), "allocate", "option", log):
        state = probed[g.probe].state if g.probe in probed else None
        images, generated[g.name] = _images(run, g, trained[g.model], seeds, made, state)
        scored.append(labels_stage.score_images(run, images))
    _write_labeling_manifest(run, opts, made)
    human = _human_verdicts(run, opts, seeds)
    quality, feats = np.stack([s for s, _ in scored], 1), np.stack([f for _, f in scored], 1)
    oof = router_stage.load_oof(run)
    _, X, names = features_stage.load(run)
    a, b = (next(i for i, g in enumerate(opts) if g.name == name) for name in made)  # the brief's pair, A first
    routed, tau = routed_stage.load(run), labels_stage.tau(run)
    options = _options(run, opts, _seconds(run, opts, generated, trained, seeds, probed, routed, made),
                       routed, trained)
    t = cfg.allocation.threshold
    result = allocation.evaluate(
        quality, options, X, oof["fold"], tau, binary=(a, b),
        p_cheap=oof["p_cheap"], router_threshold=cfg.router.threshold, feats=feats,
        feats_real=labels_stage.load_scores(run)["feats_real"], seed=cfg.router.seed,
        boot=stats.BootstrapConfig(n_resamples=cfg.cost.bootstrap),
        thresholds=sorted({*allocation.THRESHOLDS, t}),
        classes=allocation.Classes(seeds_stage.load(run)["labels"], cfg.data.classes) if cfg.data.num_classes > 1
        else None, human=human, probes={name: p.features for name, p in probed.items()})
    router = allocation.ROUTER_PROBE
    deployed = policy.fit({router: X, **{name: p.features for name, p in probed.items()}},
                          {router: names, **{p.name: p.feature_names for _, p in probes}}, quality, options,
                          tau, t, seed=cfg.router.seed, human=human)
    own = allocation.family_probes(options)
    name = allocation.cascade_name(0, own[0]) if own else "learned allocation"
    result["deployed"] = {"policy": name, "threshold": t, "fitted_on": "every seed (in sample; its out-of-sample "
                          "figures are the cross-fitted point of the same policy at this threshold)"}
    policy.save(deployed, run.path("allocate", "policy"), policy_name=name)
    io.write_json(run.path("allocate", "results.json"), result)
    best = {policy: max((p for p in result["points"] if p["policy"] == policy), key=lambda p: p["quality"])
            for policy in dict.fromkeys(("learned allocation", name))}
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
# networks' FLOPs per pass from the routed stage; 6: each option timed by its own generation batches, the "after
# probe" options continuing A's one probe (whose features the cascade reads); 7: B's few-step options (the distilled
# correctors, naive DDIM at their steps and on the whole grid); 8: A's distilled options too; 9: every family's own
# probe (A's, MADFormer's) with its "after probe" options, its probe allocation and the cascade through it; an
# option's kept images keyed by the stages that trained its params too
def stage(cfg) -> Stage:
    """The stage, after the training stages of the families a preset adds (the brief's pair's reach it through the
    seeds stage)."""
    return Stage("allocate", run_stage, config=lambda cfg: (cfg.allocation, cfg.cost, cfg.seeds.batch_size,
                                                            *(f.settings(cfg) for f in generators.families(cfg))),
                 after=("seeds", "labels", "router", "routed", "distill", *train.added_models(cfg)), version=9,
                 inputs=lambda run: (file_hash(run.path(labeling.OPTIONS_FILE)),))
