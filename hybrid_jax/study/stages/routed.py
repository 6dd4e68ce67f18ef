"""Stage `routed`: every strategy's measured cost and out-of-sample quality, and the cost-quality curves.

Decisions are the cross-fitted ones of the router stage (no seed is decided by a router that
trained or selected features on it). Seconds are measured under one batching policy for every
strategy (`hybrid_jax.study.cost`) on the first `cost.num_images` seeds; passes, FLOPs and quality
use every seed. The deployed router runs the real routed sampler once, to check that a routed
image equals its generator's own image.
"""

from __future__ import annotations

import jax
import numpy as np

from hybrid_jax import generators, io, routing, stats
from hybrid_jax.data import fixed_batches
from hybrid_jax.routing import early_exit, evaluation
from hybrid_jax.study import cost
from hybrid_jax.study.rundir import Run, Stage
from hybrid_jax.study.stages import features as features_stage
from hybrid_jax.study.stages import labels as labels_stage
from hybrid_jax.study.stages import router as router_stage
from hybrid_jax.study.stages import seeds as seeds_stage
from hybrid_jax.study.stages import train


def make_routed_sampler(run: Run) -> routing.RoutedSampler:
    """The deployed router's routed sampler (probe B, route in-graph, finish B or run A), over the
    run's mesh when it has one (`--devices N`)."""
    ens, idx = router_stage.load_deployed(run)
    sa, sb = seeds_stage.samplers(run.cfg)
    return routing.make_routed_sampler(sa, sb, ens, idx, run.cfg.router.prefix_steps, mesh=run.mesh,
                                       num_classes=run.cfg.data.num_classes)


def _timings(run: Run, routed, pa, pb, decisions: dict[str, np.ndarray], seeds: np.ndarray,
             options: tuple[str, str], oracle: np.ndarray) -> dict:
    """Every strategy's seconds on the first cost.num_images seeds; the labels' `oracle` (no probe) composed from
    the fixed rows (`cost.composed_row`)."""
    c = run.cfg.cost
    n = min(c.num_images, len(seeds))
    multiple = 1 if run.mesh is None else run.mesh.size
    batch = -(-c.batch_size // multiple) * multiple  # cost.batch_size rounded up to lie evenly over the mesh
    keys_a, keys_b = routing.seed_keys(seeds[:n], run.cfg.seeds.base_seed)
    classes = generators.seed_labels(seeds[:n], run.cfg.data.num_classes)
    work = cost.make_work(routed, pa, pb, run.cfg.router.prefix_steps, mesh=run.mesh)
    contenders = cost.strategies(work, keys_a, keys_b, {k: v[:n] for k, v in decisions.items()}, batch,
                                 classes, options)
    compiled = {}
    rows = cost.measure(contenders, n, c.repeats,
                        warm=lambda: compiled.update(cost.warm_up(work, keys_a, keys_b, batch, classes)))
    decisions = {"oracle (labels)": oracle, **decisions}
    share = {k: float(v[:n].mean()) for k, v in decisions.items()}
    rows = {**{k: v for k, v in rows.items() if k.startswith("always ")},
            "oracle (labels)": cost.composed_row(rows, options, share["oracle (labels)"]), **rows}
    return {"n_images": n, "batch_size": batch, "repeats": c.repeats, "rows": rows, "first_call": compiled,
            "share_to_a": share}


def _early_exit(run: Run, routed, pb, seeds: np.ndarray, oof: dict, scores: dict, X: np.ndarray, names: list[str],
                units: dict, flops: dict) -> dict:
    """The early-exit policy (`hybrid_jax.routing.early_exit`) on every seed, out of sample, with its two extra units of
    work timed on the cost sample (on one device, in batches of cost.batch_size)."""
    cfg, ec = run.cfg, run.cfg.early_exit
    probe = early_exit.make_probe(routed.sampler_b, ec.k_early)
    keys = generators.seed_stream(seeds, cfg.seeds.base_seed, "model_b")
    classes = generators.seed_labels(seeds, cfg.data.num_classes)
    entropy = np.zeros(len(seeds))
    for _, part, padded in fixed_batches(np.arange(len(seeds)), cfg.cost.batch_size):  # the timed shape: one compile
        entropy[part] = np.asarray(probe(pb, keys[padded], classes[padded])[1])[: len(part)]
    n = min(cfg.cost.num_images, len(seeds))
    seconds = cost.early_seconds(probe, routed.sampler_b.finish, pb, keys[:n], cfg.cost.batch_size, cfg.cost.repeats,
                                 classes[:n])
    added = early_exit.early_units(units, ec.k_early, cfg.router.prefix_steps, flops["b_ar_step"], seconds)
    result = early_exit.evaluate(entropy, oof["y"], oof["fold"], oof["p_cheap"], cfg.router.threshold,
                                 scores["score_a"], scores["score_b"], X[:, names.index("attn_entropy")],
                                 {**units, **added}, min_accuracy=ec.min_accuracy, seed=cfg.router.seed,
                                 boot=stats.BootstrapConfig(n_resamples=cfg.cost.bootstrap))
    return {"k_early": ec.k_early, "units": added, **result}


def run_stage(run: Run) -> dict:
    cfg = run.cfg
    routed = make_routed_sampler(run)
    pa, pb = train.restore_params(run, "model_a"), train.restore_model_b(run)
    seeds = seeds_stage.load(run)
    oof = router_stage.load_oof(run)
    labels, source = labels_stage.router_labels(run)
    oracle = np.array([labels[int(s)] == "A_needed" for s in seeds["seeds"]])
    to_a = oof["p_cheap"] < cfg.router.threshold  # out-of-sample decisions
    io.write_npz(run.path("routed", "decisions.npz"), seeds=seeds["seeds"], to_a=to_a, oracle_to_a=oracle,
                 p_cheap=oof["p_cheap"], fold=oof["fold"])
    b = min(cfg.seeds.batch_size, cfg.cost.num_images)  # the routed sampler checked on the timed seeds
    keys_a, keys_b = routing.seed_keys(seeds["seeds"][:b], cfg.seeds.base_seed)
    classes = generators.seed_labels(seeds["seeds"][:b], cfg.data.num_classes)
    check = cost.consistency(routed.run(pa, pb, keys_a, keys_b, classes), *seeds_stage.brief_images(seeds))
    options = tuple(g.name for g in generators.binary(cfg))  # the router's two options (A's role, then B's)
    timed = _timings(run, routed, pa, pb, {"learned router": to_a}, seeds["seeds"], options, oracle)
    flops = cost.pass_flops(cfg, {"model_a": pa, "model_b": pb})  # once per run: the allocate stage reads them from cost.json
    units = cost.unit_costs(timed["rows"], cost.unit_work(cfg, flops), options)
    _, X, names = features_stage.load(run)
    scores = labels_stage.load_scores(run)
    curves = evaluation.cost_quality_curves(
        oof["y"], oof["p_cheap"], oof["fold"], X, names, scores["score_a"], scores["score_b"], units,
        feats_a=scores["feats_a"], feats_b=scores["feats_b"], feats_real=scores["feats_real"],
        threshold=cfg.router.threshold, seed=cfg.router.seed,
        boot=stats.BootstrapConfig(n_resamples=cfg.cost.bootstrap), options=options)
    if cfg.data.num_classes > 1:  # each class's router curve beside random routing at its shares
        curves["by_class"] = evaluation.curves_by_class(
            cfg.data.classes, seeds["labels"], oof["y"], oof["p_cheap"], scores["score_a"], scores["score_b"],
            units, seed=cfg.router.seed, boot=stats.BootstrapConfig(n_resamples=cfg.cost.bootstrap),
            options=options)
    exit_early = _early_exit(run, routed, pb, seeds["seeds"], oof, scores, X, names, units, flops)
    share = timed["share_to_a"]["learned router"]
    expected = evaluation.Options.binary(units, options).per_image(evaluation.binary_mix(share), True)["seconds"]
    measured = timed["rows"]["learned router"]["seconds_per_image"]
    out = {"options": list(options), "label_source": source, "timing": timed, "units": units, "pass_flops": flops,
           "curves": curves, "early_exit": exit_early,
           "consistency": check,
           "timing_check": {"share_to_a": share, "measured": measured, "composed": expected,
                            "ratio": measured / expected},
           "device": str(jax.devices()[0]), "platform": jax.default_backend(), "mesh_devices": run.devices}
    io.write_json(run.path("routed", "cost.json"), out)
    return {"share_to_a": float(to_a.mean()), "device": out["device"],
            "verdict": curves["router_vs_random"]["verdict"]}


def load(run: Run) -> dict:
    return io.read_json(run.path("routed", "cost.json"))


# With several classes the curves are also drawn per class (a fingerprint change for those runs only)
# version 1: each network's FLOPs per pass in cost.json ("pass_flops"), which the allocate stage reads; 2: one
# compiling call per program before the timed rounds (timing["first_call"]) instead of a whole compiling round; 3:
# the early-exit policy (cost.json "early_exit", `hybrid_jax.routing.early_exit`); 4: the oracle's seconds composed from
# the fixed rows, not timed again; the routed sampler checked on the timed seeds; 5: the entropy's AUC with its interval
STAGE = Stage("routed", run_stage, config=lambda cfg: (cfg.cost, cfg.early_exit)
              + (("curves per class",) if cfg.data.num_classes > 1 else ()), after=("router", "labels", "seeds"),
              version=5)
