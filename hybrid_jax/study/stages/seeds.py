"""Stage `seeds`: the brief pair's images (A's, B's; each under its option's name) and B's k-step probe features
for every seed, in resumable batches."""

from __future__ import annotations

import logging

import jax
import numpy as np

from hybrid_jax import generators, io, labeling, progress, sharding
from hybrid_jax.config import Preset
from hybrid_jax.data import fixed_batches
from hybrid_jax.generators import model_a, model_b
from hybrid_jax.probe import features as features_lib
from hybrid_jax.routing.evaluation import ROUTER_PROBE
from hybrid_jax.study.rundir import Run, Stage, done_record, fingerprint
from hybrid_jax.study.stages import train

log = logging.getLogger("hybrid_jax.stages.seeds")


def samplers(cfg: Preset) -> tuple[model_a.Sampler, model_b.Sampler]:
    """The brief pair's samplers (B's AR prefix is the router's probe)."""
    n = cfg.data.num_classes
    return (model_a.make_sampler(cfg.model_a, geometry=cfg.geometry, num_classes=n),
            model_b.make_sampler(cfg.model_b, cfg.corrector, geometry=cfg.geometry, num_classes=n))


def seed_ids(cfg: Preset) -> np.ndarray:
    """The seeds the stage generates: 0 .. seeds.num_seeds - 1."""
    return np.arange(cfg.seeds.num_seeds)


PARTS_FORMAT = 2  # 2: each option's images under its name


def _parts_dir(run: Run):
    """Batches are kept per (seeds config, probe length, trained models): another setting never reuses them."""
    models = [done_record(run, m)["fingerprint"] for m in train.MODELS]
    return run.path("seeds", "parts", fingerprint(run.cfg.seeds, run.cfg.router.prefix_steps, models, PARTS_FORMAT))


def run_stage(run: Run) -> dict:
    cfg = run.cfg
    options, (_, sb), mesh = generators.binary(cfg), samplers(cfg), run.mesh
    params = sharding.replicate({g.model: train.restore_option_params(run, g.model) for g in options}, mesh)
    router = next(i for i, g in enumerate(options) if g.probe == ROUTER_PROBE)  # B's: it finishes the probe
    compute_features = jax.jit(lambda prefix: features_lib.compute(prefix, cfg.geometry, cfg.data.num_classes))
    seeds = seed_ids(cfg)
    bs = cfg.seeds.batch_size
    parts_dir = _parts_dir(run)
    parts = {}  # start -> this batch's arrays (made now, or read from an earlier run's file)
    for start, chunk, padded in progress.track(fixed_batches(seeds, bs), -(-len(seeds) // bs), "seeds", "batch", log):
        part = parts_dir / f"part_{start:06d}.npz"
        if part.exists():
            parts[start] = io.read_npz(part)
            continue
        labels = generators.seed_labels(padded, cfg.data.num_classes)
        *keys, labels = sharding.shard_batch(
            (*(generators.stream_keys(padded, cfg.seeds.base_seed, g.stream) for g in options), labels), mesh)
        prefix = sb.ar_prefix(params[options[router].model], keys[router], cfg.router.prefix_steps, labels)
        made = sharding.to_host({"labels": labels, "features": compute_features(prefix), **{
            g.name: g.finish(params[g.model], prefix) if g.probe == ROUTER_PROBE
            else g.sample_keys(params[g.model], k, labels) for g, k in zip(options, keys)}})
        parts[start] = {"seeds": chunk, **{k: v[: len(chunk)] for k, v in made.items()}}
        io.write_npz(part, **parts[start])
    merged = {k: np.concatenate([parts[s][k] for s in sorted(parts)]) for k in parts[0]}
    images = {g.name: merged[g.name] for g in options}
    labeling.write_seeds(run.path(labeling.SEEDS_FILE), merged["seeds"], images, merged["labels"])
    for role, g in zip(labeling.MODELS, options):  # the reader's names: _A, _B
        for s, x in zip(merged["seeds"], images[g.name]):
            io.write_bytes(run.path("seeds", "png", f"seed_{s:06d}_{role}.png"), io.png_bytes(x))
    names = features_lib.feature_names(cfg.model_b.decoder.num_layers, cfg.data.classes)
    io.write_npz(run.path("seeds", "features.npz"), seeds=merged["seeds"], features=merged["features"],
                 names=np.asarray(names))
    return {"n_seeds": len(seeds), **{f"passes_{role.lower()}": g.passes for role, g in zip(labeling.MODELS,
                                                                                          options)}}


def load(run: Run) -> dict[str, np.ndarray]:
    """{"seeds": [n], "labels": [n] (each seed's class, `generators.seed_labels`), "options": the brief pair's names
    (A's first), and under each name its images [n, S, S, 3]} (`labeling.write_seeds`), S =
    geometry.image_size."""
    return io.read_npz(run.path(labeling.SEEDS_FILE))


def brief_images(data: dict) -> tuple[np.ndarray, np.ndarray]:
    """The brief pair's images of every seed (A's, B's) from `load`'s arrays."""
    return tuple(labeling.seed_images(data).values())


def load_seed_ids(run: Run) -> np.ndarray:
    return load(run)["seeds"]


def load_probe_features(run: Run) -> dict[str, np.ndarray]:
    """{"seeds": [n], "features": [n, F], "names": [F]} as the probe computed them."""
    return io.read_npz(run.path("seeds", "features.npz"))


# version 1: seeds.npz holds each seed's class ("labels"); 2: each option's images under its name
# With several classes the features end in the class one-hot (a fingerprint change for those runs only)
STAGE = Stage("seeds", run_stage, config=lambda cfg: (cfg.seeds, cfg.router.prefix_steps)
              + (("class one-hot features",) if cfg.data.num_classes > 1 else ()), after=train.MODELS, version=2)
