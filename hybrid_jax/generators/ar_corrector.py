"""Model B's family: the causal patch transformer (`model_b`) and its shallow diffusion corrector (`corrector`),
an option per corrector depth, each able to finish from B's AR prefix (its probe); and, per round of the
corrector's progressive distillation (stage `distill`), its student and naive DDIM at the student's steps."""

from __future__ import annotations

import jax.numpy as jnp
import numpy as np

from hybrid_jax import distill, timing
from hybrid_jax.config import Preset
from hybrid_jax.generators import model_b
from hybrid_jax.generators.base import Distillation, Family, Generator, Network, distilled_option
from hybrid_jax.models.decoder import init_cache

NAME = "model_b"
STREAM = 2
DISTILLED = "model_b/distilled"  # the students' params: {"family": B's params, "students": {steps: ..}}


def option(cfg: Preset, depth: int) -> Generator:
    s = model_b.make_sampler(cfg.model_b, cfg.corrector, depth, geometry=cfg.geometry,
                             num_classes=cfg.data.num_classes)
    return Generator(f"B/corrector {depth}", NAME, s.sample_keys,
                     {"b_ar_step": cfg.geometry.num_patches, "corrector_unet": depth}, probe="B", finish=s.finish,
                     stream=STREAM)


def _passes(cfg: Preset, grid) -> dict[str, int]:
    return {"b_ar_step": cfg.geometry.num_patches, "corrector_unet": len(grid)}


def _ddim(cfg: Preset, grid, v_prediction: bool = False) -> model_b.Sampler:
    return model_b.make_sampler(cfg.model_b, cfg.corrector, geometry=cfg.geometry, num_classes=cfg.data.num_classes,
                                grid=grid, ddim=True, v_prediction=v_prediction)


def _naive(cfg: Preset, grid) -> Generator:
    s = _ddim(cfg, grid)
    return Generator(f"B/corrector DDIM {len(grid)}", NAME, s.sample_keys, _passes(cfg, grid), probe="B",
                     finish=s.finish, stream=STREAM)


def distillations(cfg: Preset) -> tuple[Distillation, ...]:
    """With `ar_corrector.halvings`: the corrector's `start_step` trained steps by DDIM halved round by round
    (30 -> 15 -> 8 -> 4), each student finishing B from its AR prefix as the corrector does."""
    c, halvings = cfg.corrector, cfg.ar_corrector.halvings
    if not halvings:
        return ()
    grids = distill.grids(np.arange(c.start_step - 1, -1, -1), halvings)
    with_student = lambda family, student: {"ar": family["ar"], "corrector": student}
    students = tuple(distilled_option(f"B/corrector distilled {len(g)}", DISTILLED, _ddim(cfg, g, True), with_student,
                                      len(g), _passes(cfg, g), stream=STREAM, probe="B") for g in grids[1:])
    return (Distillation(DISTILLED, "corrector", model_b.corrector_fn(c, cfg.data.num_classes),
                         distill.class_condition, c.num_timesteps, grids, _naive(cfg, grids[0]), students,
                         tuple(_naive(cfg, g) for g in grids[1:])),)


def options(cfg: Preset) -> tuple[Generator, ...]:
    """B at every corrector depth of the allocation and its trained one, deepest first, then its distillation's
    options (the teacher, each student and naive DDIM at its steps)."""
    depths = set(cfg.ar_corrector.depths) | {cfg.corrector.start_step}
    return tuple(option(cfg, d) for d in sorted(depths, reverse=True)) + tuple(
        g for d in distillations(cfg) for g in d.options)


def pass_flops(cfg: Preset, params) -> dict[str, float]:
    """FLOPs at batch 1 at the preset's geometry (XLA's cost analysis) of one AR step of the decoder (KV-cached), its
    teacher-forcing pass over the whole sequence (the probe's) and one corrector pass: the units its options' pass
    counts and the probe name."""
    g, d = cfg.geometry, cfg.model_b.decoder
    x, t = jnp.zeros((1, *g.image_shape)), jnp.zeros((1,), jnp.int32)
    decoder = model_b.make_decoder(cfg.model_b, geometry=g)
    cache = init_cache(1, d.num_layers, d.width, d.num_heads, seq_len=g.num_patches)
    corrector = model_b.make_corrector_unet(cfg.corrector)
    return {
        "b_ar_step": timing.flops(lambda p, c: decoder.apply({"params": p}, jnp.zeros((1, 1, g.patch_dim)), 3, c),
                                  params["ar"], cache),
        "b_teacher_forcing": timing.flops(
            lambda p: model_b.teacher_forcing(decoder, p, jnp.zeros((1, g.num_patches, g.patch_dim))), params["ar"]),
        "corrector_unet": timing.flops(lambda p: corrector.apply({"params": p}, x, t), params["corrector"]),
    }


def _init(cfg: Preset, key) -> dict:
    return model_b.init_params(cfg.model_b, cfg.corrector, key, geometry=cfg.geometry,
                               num_classes=cfg.data.num_classes)


NETWORKS = (
    Network("model_b", lambda cfg: cfg.model_b,
            lambda cfg: model_b.make_ar_loss(cfg.model_b, geometry=cfg.geometry, num_classes=cfg.data.num_classes),
            lambda cfg, key: _init(cfg, key)["ar"]),
    Network("corrector", lambda cfg: cfg.corrector,
            lambda cfg: model_b.make_corrector_loss(cfg.corrector, num_classes=cfg.data.num_classes),
            lambda cfg, key: _init(cfg, key)["corrector"]),
)

FAMILY = Family(NAME, STREAM, NETWORKS, settings=lambda cfg: cfg.ar_corrector,
                assemble=lambda p: {"ar": p["model_b"], "corrector": p["corrector"]}, options=options,
                brief=lambda cfg: option(cfg, cfg.corrector.start_step), pass_flops=pass_flops,
                distillations=distillations)
