"""Stage `curves`: each family's brief option (`Family.brief`: the brief's pair, then each other family's own)
judged at every training snapshot, so a model is read by its learning curve, not one final number.

At each snapshot (`<model>.snapshots` evenly spaced steps, the last the end of training) the option samples the
first `curves.num_seeds` seeds with its real sampler and the snapshot's params; the images are scored on held-out
real images like the premise (FD and KID in every premise space, median quality, each with a
95 % bootstrap interval over the images) and placed against the training FLOPs (XLA's cost of one training step x
steps) and seconds (the stage's measured seconds per step x steps) spent to reach it. The last snapshot is the
trained model, whose images the seeds stage already made for the brief's pair: they are reused, not sampled again.
"""

from __future__ import annotations

import logging
import re

import numpy as np

from hybrid_jax import generators, io, progress, tensorboard
from hybrid_jax.study import premise
from hybrid_jax.study.rundir import Run, Stage, done_record, fingerprint, summary
from hybrid_jax.study.stages import labels as labels_stage
from hybrid_jax.study.stages import seeds as seeds_stage
from hybrid_jax.study.stages import train

log = logging.getLogger("hybrid_jax.stages.curves")

VERSION = 1  # 1: FD/KID intervals corrected for the resamples' bias (`premise.distance_estimates`)
def _curve_options(cfg) -> list[tuple[generators.Generator, str | None]]:
    """Each family's brief option and the seeds stage's array of its trained images (its name; None: sampled
    here)."""
    made = {g.name for g in generators.binary(cfg)}
    return [(g, g.name if g.name in made else None) for g in (f.brief(cfg) for f in generators.families(cfg))]


def _seconds_per_step(trained: dict) -> float:
    """A training stage's measured seconds over the steps it trained in its last process (a resumed run: those
    after the resume), from its summary."""
    return trained["seconds"] / max(trained["steps"] - (trained.get("resumed_from") or 0), 1)


def _points(trained: dict[str, dict], stages: tuple[str, ...]) -> list[dict[str, int]]:
    """Per curve point of an option sampling with the networks of training `stages`: training stage -> its snapshot
    step (index k of each), read off their summaries (`trained`); without snapshots, the end of training alone."""
    steps = {name: trained[name]["snapshots"] or [trained[name]["steps"]] for name in stages}
    return [{name: steps[name][k] for name in stages} for k in range(len(steps[stages[0]]))]


def _slug(name: str) -> str:
    return re.sub(r"[^A-Za-z0-9]+", "_", name).strip("_")


def run_stage(run: Run) -> dict:
    cfg = run.cfg
    seeds = np.arange(cfg.curves.num_seeds)
    spaces, judge = labels_stage.premise_spaces(run)
    final = seeds_stage.load(run)
    trained = {name: summary(run, name) for name in train.models(cfg)}
    flops = {}  # training stage -> FLOPs of one step, compiled only for a point still to be made
    parts = run.path("curves", "points", fingerprint(cfg.curves, VERSION, [done_record(run, s)["fingerprint"]
                                                                           for s in ("seeds", "labels")]))
    points = []
    for g, key in _curve_options(cfg):
        networks = train.trained_by(cfg, g.model)
        steps_of = _points(trained, networks)
        write = tensorboard.scalar_writer(run.path("tb", "curves", _slug(g.name)))
        # the parts folder is keyed by the seeds stage, so by the brief pair's training; others' points by their own
        trained_as = "".join(f"_{done_record(run, n)['fingerprint']}" for n in networks if n not in train.MODELS)
        for k, steps in enumerate(progress.track(steps_of, len(steps_of), f"curves {g.name}", "point", log)):
            path = parts / f"{_slug(g.name)}_{k}{trained_as}.json"
            if path.exists():
                point = io.read_json(path)
            else:
                last = k == len(steps_of) - 1  # the trained model (the brief pair's: the seeds stage made its images)
                if last and key is not None:
                    images = final[key][: len(seeds)]
                else:
                    params = {g.model: train.restore_option_params(run, g.model, None if last else steps)}
                    images = generators.generate((g,), params, seeds, np.zeros(len(seeds), int),
                                                 base_seed=cfg.seeds.base_seed, batch_size=cfg.seeds.batch_size,
                                                 num_classes=cfg.data.num_classes)
                for n in steps.keys() - flops.keys():
                    flops[n] = train.step_flops(run, n)
                rng = np.random.default_rng([cfg.router.seed, k])
                point = {"option": g.name, "model": g.model, "snapshot": k, "steps": steps,
                         "fraction": float(np.mean([s / trained[n]["steps"] for n, s in steps.items()])),
                         "train_flops": float(sum(s * flops[n] for n, s in steps.items())),
                         "train_seconds": float(sum(s * _seconds_per_step(trained[n]) for n, s in steps.items())),
                         **premise.quality_figures(*judge(images), spaces, rng, cfg.curves.resamples)}
                io.write_json(path, point)
            for space, f in point["spaces"].items():
                for stat in ("fd", "kid"):
                    write(f"{stat}/{_slug(space)}", f[stat], int(point["train_flops"] / 1e9))
            write("median_quality", point["median_quality"], int(point["train_flops"] / 1e9))
            points.append(point)
    io.write_json(run.path("curves", "curves.json"), {"points": points, "spaces": [s.name for s in spaces],
                                                     "num_seeds": len(seeds)})
    return {"points": len(points), "options": sorted({p["option"] for p in points})}


def load(run: Run) -> dict:
    """{"points": [per option and snapshot: option, model, snapshot, steps, fraction, train_flops, train_seconds,
    n, median_quality(_ci), spaces: {space: {fd, fd_ci, kid, kid_ci}}], "spaces": [...], "num_seeds": n}."""
    return io.read_json(run.path("curves", "curves.json"))


def stage(cfg) -> Stage:
    """The stage, after every training stage of the preset's families."""
    return Stage("curves", run_stage, config=lambda cfg: (cfg.curves, cfg.seeds.base_seed, cfg.seeds.batch_size,
                                                          *(f.brief(cfg).name for f in generators.families(cfg)
                                                            if f.name not in generators.BRIEF_PAIR)),
                 after=("data", *train.MODELS, "seeds", "labels", *train.added_models(cfg)), version=VERSION)
