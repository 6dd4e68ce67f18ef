"""The study as resumable stages over one work directory.

`stages(cfg)` lists the stages (`hybrid_jax.study.stages`, one module each) in dependency order: the data, one
training stage per network of the preset's generator families, then the study's. Each
writes its outputs atomically under `<workdir>/<stage>/` and, last, a `done.json` holding a
fingerprint of what it depends on: the config values it reads, the fingerprints of the stages
it reads from, and outside files (the human labels). A stage whose `done.json` matches is
skipped, so a changed field re-runs only the stages that depend on it: a new router threshold
re-runs router, routed and report in seconds, never a trained model. Training stages resume
from their newest orbax checkpoint; the seeds stage from its newest finished batch.
"""

from __future__ import annotations

import logging
import time

from hybrid_jax import io, sharding, tensorboard, timing
from hybrid_jax.study.rundir import (Run, RunDirError, Stage, begin, check_workdir, is_done, load_run, mark_done,
                               open_run, preset_from_dict)
from hybrid_jax.study.stages import allocate, curves, data, distill, features, labels, report, routed, router, seeds, train

__all__ = ["Run", "RunDirError", "check_inputs", "fingerprints", "load_policy", "load_run", "make_routed_sampler",
           "open_run", "pending", "preset_from_dict", "restore_model_b", "restore_option_params", "restore_params",
           "run_stages", "samplers", "stage_names", "stages"]

log = logging.getLogger("hybrid_jax.pipeline")



def stages(cfg) -> tuple[Stage, ...]:
    """The preset's stages in dependency order (the training stages and what follows them from its families)."""
    return (data.STAGE, *train.stages(cfg), distill.stage(cfg), seeds.STAGE, features.STAGE, labels.STAGE,
            curves.stage(cfg), router.STAGE, routed.STAGE, allocate.stage(cfg), report.STAGE)


def stage_names(cfg) -> tuple[str, ...]:
    return tuple(s.name for s in stages(cfg))

# The public entry points of a finished work dir (README "Public API").
restore_params = train.restore_params
restore_model_b = train.restore_model_b
restore_option_params = train.restore_option_params
samplers = seeds.samplers
make_routed_sampler = routed.make_routed_sampler
load_policy = allocate.load_policy


def _check_only(cfg, only) -> None:
    names = stage_names(cfg)
    unknown = [s for s in only or () if s not in names]
    if unknown:
        raise RunDirError(f"unknown stage(s) {', '.join(unknown)}; stages are {','.join(names)}")


def fingerprints(run: Run) -> dict[str, str]:
    """Every stage's fingerprint under `run`'s config and inputs (reads no stage output, writes nothing)."""
    out: dict[str, str] = {}
    for stage in stages(run.cfg):
        out[stage.name] = stage.fingerprint(run, out)
    return out


def pending(run: Run, only: tuple[str, ...] | None = None) -> list[str]:
    """The stages `run_stages(run, only)` would run, in order: those whose `done.json` does not match."""
    _check_only(run.cfg, only)
    fps = fingerprints(run)
    return [s.name for s in stages(run.cfg) if (not only or s.name in only) and not is_done(run, s.name, fps[s.name])]


def check_inputs(run: Run, only: tuple[str, ...] | None = None) -> None:
    """Before any work: refuse a work dir of another config, then read and validate what each stage that is to
    run takes from outside the work dir (`Stage.check`); raises the first user error, writes nothing."""
    check_workdir(run.cfg, run.workdir)
    todo = set(pending(run, only))
    for stage in stages(run.cfg):
        if stage.name in todo:
            stage.check(run)


def run_stages(run: Run, only: tuple[str, ...] | None = None) -> dict[str, dict]:
    """Run every stage not already done (or just `only`, which must have their inputs ready)."""
    _check_only(run.cfg, only)
    summaries, fps = {}, fingerprints(run)
    names = stage_names(run.cfg)
    stage_scalars = None  # TensorBoard `<workdir>/tb/stages`, opened when a stage runs
    for stage in stages(run.cfg):
        fp = fps[stage.name]
        if only and stage.name not in only:
            continue
        sharding.sync(f"stage {stage.name}")  # several processes: each stage starts on what the last one wrote
        if is_done(run, stage.name, fp):
            log.info("stage %-9s done already, skipped", stage.name)
            summaries[stage.name] = io.read_json(run.path(stage.name, "done.json"))["summary"]
            continue
        log.info("stage %-9s running", stage.name)
        if stage.fresh:
            begin(run, stage.name, fp)
        t0 = time.perf_counter()
        summary = stage.run(run)
        summary["stage_seconds"] = time.perf_counter() - t0
        summary.update(timing.memory_peaks())
        summaries[stage.name] = mark_done(run, stage.name, fp, summary)
        log.info("stage %-9s finished in %.1f s", stage.name, summary["stage_seconds"])
        stage_scalars = stage_scalars or tensorboard.scalar_writer(run.path("tb", "stages"))
        stage_scalars(f"stage_seconds/{stage.name}", summary["stage_seconds"], names.index(stage.name))
    sharding.sync("stages finished")
    return summaries
