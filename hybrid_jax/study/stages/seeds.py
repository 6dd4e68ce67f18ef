"""Stage `seeds`: A's image, B's image and B's k-step probe features for every seed, in resumable batches."""

from __future__ import annotations

import logging

import jax
import numpy as np

from hybrid_jax import generators, io, progress, routing, sharding
from hybrid_jax.config import Preset
from hybrid_jax.data import fixed_batches
from hybrid_jax.generators import model_a, model_b
from hybrid_jax.probe import features as features_lib
from hybrid_jax.study.rundir import Run, Stage, done_record, fingerprint
from hybrid_jax.study.stages import train

log = logging.getLogger("hybrid_jax.stages.seeds")


def samplers(cfg: Preset) -> tuple[model_a.Sampler, model_b.Sampler]:
    n = cfg.data.num_classes
    return (model_a.make_sampler(cfg.model_a, geometry=cfg.geometry, num_classes=n),
            model_b.make_sampler(cfg.model_b, cfg.corrector, geometry=cfg.geometry, num_classes=n))


def seed_ids(cfg: Preset) -> np.ndarray:
    """The seeds the stage generates: 0 .. seeds.num_seeds - 1."""
    return np.arange(cfg.seeds.num_seeds)


def _parts_dir(run: Run):
    """Batches are kept per (seeds config, probe length, trained models): another setting never reuses them."""
    models = [done_record(run, m)["fingerprint"] for m in train.MODELS]
    return run.path("seeds", "parts", fingerprint(run.cfg.seeds, run.cfg.router.prefix_steps, models))


def run_stage(run: Run) -> dict:
    cfg = run.cfg
    sa, sb = samplers(cfg)
    mesh = run.mesh
    pa, pb = sharding.replicate((train.restore_params(run, "model_a"), train.restore_model_b(run)), mesh)
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
        keys_a, keys_b, labels = sharding.shard_batch((*routing.seed_keys(padded, cfg.seeds.base_seed), labels), mesh)
        prefix = sb.ar_prefix(pb, keys_b, cfg.router.prefix_steps, labels)
        made = sharding.to_host({"labels": labels, "images_a": sa.sample_keys(pa, keys_a, labels),
                                 "images_b": sb.finish(pb, prefix), "features": compute_features(prefix)})
        parts[start] = {"seeds": chunk, **{k: v[: len(chunk)] for k, v in made.items()}}
        io.write_npz(part, **parts[start])
    merged = {k: np.concatenate([parts[s][k] for s in sorted(parts)]) for k in parts[0]}
    io.write_npz(run.path("seeds", "seeds.npz"), seeds=merged["seeds"], labels=merged["labels"],
                 images_a=merged["images_a"], images_b=merged["images_b"])
    for s, a, b in zip(merged["seeds"], merged["images_a"], merged["images_b"]):
        io.write_bytes(run.path("seeds", "png", f"seed_{s:06d}_A.png"), io.png_bytes(a))
        io.write_bytes(run.path("seeds", "png", f"seed_{s:06d}_B.png"), io.png_bytes(b))
    names = features_lib.feature_names(cfg.model_b.decoder.num_layers, cfg.data.classes)
    io.write_npz(run.path("seeds", "features.npz"), seeds=merged["seeds"], features=merged["features"],
                 names=np.asarray(names))
    return {"n_seeds": len(seeds), "passes_a": sa.passes, "passes_b": sb.passes}


def load(run: Run) -> dict[str, np.ndarray]:
    """{"seeds": [n], "labels": [n] (each seed's class, `generators.seed_labels`), "images_a": [n, S, S, 3],
    "images_b": [n, S, S, 3]}, S = geometry.image_size."""
    return io.read_npz(run.path("seeds", "seeds.npz"))


def load_seed_ids(run: Run) -> np.ndarray:
    return load(run)["seeds"]


def load_probe_features(run: Run) -> dict[str, np.ndarray]:
    """{"seeds": [n], "features": [n, F], "names": [F]} as the probe computed them."""
    return io.read_npz(run.path("seeds", "features.npz"))


# version 1: seeds.npz holds each seed's class ("labels")
# With several classes the features end in the class one-hot (a fingerprint change for those runs only)
STAGE = Stage("seeds", run_stage, config=lambda cfg: (cfg.seeds, cfg.router.prefix_steps)
              + (("class one-hot features",) if cfg.data.num_classes > 1 else ()), after=train.MODELS, version=1)
