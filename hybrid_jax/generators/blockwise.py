"""Model A's family: the blockwise DDPM (one U-Net, `model_a`), an option per step budget, its own probe, and per
round of its progressive distillation (stage `distill`; DDIM on the respaced chain as the teacher) the student and
naive DDIM at the student's steps per block."""

from __future__ import annotations

import functools
from typing import Callable

import jax.numpy as jnp

from hybrid_jax import diffusion, distill, geometry, timing, xla
from hybrid_jax.config import Preset
from hybrid_jax.generators import model_a
from hybrid_jax.generators.base import Distillation, Family, Generator, Network, Probe, distilled_option
from hybrid_jax.probe import features

NAME = "model_a"
STREAM = 1
PROBE = "A"  # its own probe's name (`Generator.probe` of the options continuing it)
DISTILLED = "model_a/distilled"  # the students' params: {"family": A's U-Net, "students": {steps per block: ..}}


def option(cfg: Preset, budget: int) -> Generator:
    s = model_a.make_sampler(cfg.model_a, budget, geometry=cfg.geometry, num_classes=cfg.data.num_classes)
    return Generator(f"A/{budget} steps", NAME, s.sample_keys, {"a_unet": s.passes}, stream=STREAM)


def probed_option(cfg: Preset, budget: int) -> Generator:
    """A at `budget` steps per block after A's own probe (`model_a.make_probed_sampler`): probe, then the rest."""
    a = cfg.blockwise
    s = model_a.make_probed_sampler(cfg.model_a, budget, a.probe_budget, a.probe_steps,
                                    num_classes=cfg.data.num_classes, geometry=cfg.geometry)
    return Generator(f"A/{budget} steps after probe", NAME, s.sample_keys, {"a_unet": s.passes}, probe=PROBE,
                     finish=s.finish, stream=STREAM)


def budgets(cfg: Preset) -> list[int]:
    """The allocation's step budgets of A and its full one, most expensive first."""
    return sorted(set(cfg.blockwise.budgets) | {cfg.model_a.steps_per_block}, reverse=True)


def _ddim(cfg: Preset, grid, v_prediction: bool = False) -> model_a.Sampler:
    return model_a.make_sampler(cfg.model_a, eta=0.0, geometry=cfg.geometry, num_classes=cfg.data.num_classes,
                                grid=grid, v_prediction=v_prediction)


def _naive(cfg: Preset, grid) -> Generator:
    s = _ddim(cfg, grid)
    return Generator(f"A/DDIM {len(grid)} steps", NAME, s.sample_keys, {"a_unet": s.passes}, stream=STREAM)


def distillations(cfg: Preset) -> tuple[Distillation, ...]:
    """With `blockwise.halvings`: DDIM on `blockwise.distill_steps` steps per block of A's trained chain (respaced)
    halved round by round (quick 16 -> 2, paper 128 -> 8); one student serves every block, trained as A is on a
    random block given the real earlier blocks."""
    a, m = cfg.blockwise, cfg.model_a
    if not a.halvings:
        return ()
    grids = distill.grids(diffusion.respace(m.timesteps, a.distill_steps), a.halvings)
    students = tuple(distilled_option(f"A/distilled {len(g)} steps", DISTILLED, s, lambda family, student: student,
                                      len(g), {"a_unet": s.passes}, stream=STREAM)
                     for g in grids[1:] for s in (_ddim(cfg, g, True),))
    condition = functools.partial(model_a.random_block_condition, geometry=cfg.geometry)
    return (Distillation(DISTILLED, NAME, model_a.make_eps_fn(m, num_classes=cfg.data.num_classes), condition,
                         m.timesteps, grids, _naive(cfg, grids[0]), students, tuple(_naive(cfg, g) for g in grids[1:])),)


def options(cfg: Preset) -> tuple[Generator, ...]:
    """A at every step budget, most expensive first, then its distillation's options (the teacher, each student
    and naive DDIM at its steps)."""
    return tuple(option(cfg, b) for b in budgets(cfg)) + tuple(g for d in distillations(cfg) for g in d.options)


def probed_options(cfg: Preset) -> tuple[Generator, ...]:
    """A at each of the preset's step budgets after A's own probe (the cascade's second stage), most expensive first."""
    return tuple(probed_option(cfg, b) for b in budgets(cfg))


def probe(cfg: Preset) -> Probe:
    """A's own probe (its first `probe_steps` steps of block 0 at `probe_budget`): jitted (params_a, keys [n][,
    labels]) -> (model_a.Probe, [n, len(features.A_PROBE)] features read off it), which every "after probe" option
    continues from."""
    a = cfg.blockwise
    probed = model_a.make_probed_sampler(cfg.model_a, cfg.model_a.steps_per_block, a.probe_budget, a.probe_steps,
                                         num_classes=cfg.data.num_classes, geometry=cfg.geometry)
    mask = geometry.block_masks(cfg.geometry)[0]

    def run(params, keys, labels=None):
        state = probed.probe(params, keys, labels)
        return state, features.a_probe(state.x0, mask)

    return Probe(PROBE, xla.jit(run), features.A_PROBE, probed_options(cfg))


def pass_flops(cfg: Preset, params) -> dict[str, float]:
    """FLOPs of one pass of A's U-Net at batch 1 at the preset's geometry (XLA's cost analysis): the unit its
    options' pass counts name."""
    g = cfg.geometry
    x, t = jnp.zeros((1, *g.image_shape)), jnp.zeros((1,), jnp.int32)
    cond = jnp.zeros((1, *g.image_shape[:2], model_a.COND_CHANNELS))
    return {"a_unet": timing.flops(model_a.make_eps_fn(cfg.model_a), params, x, t, (cond, None))}


def _loss(cfg: Preset):
    return model_a.make_loss(cfg.model_a, geometry=cfg.geometry, num_classes=cfg.data.num_classes)


def _init(cfg: Preset, key):
    return model_a.init_params(cfg.model_a, key, geometry=cfg.geometry, num_classes=cfg.data.num_classes)


FAMILY = Family(NAME, STREAM, (Network("model_a", lambda cfg: cfg.model_a, _loss, _init),),
                settings=lambda cfg: cfg.blockwise, assemble=lambda p: p["model_a"], options=options,
                brief=lambda cfg: option(cfg, cfg.model_a.steps_per_block), pass_flops=pass_flops,
                distillations=distillations, probe=probe)
