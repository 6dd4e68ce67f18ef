"""Model B's family: the causal patch transformer (`model_b`) and its shallow diffusion corrector (`corrector`),
an option per corrector depth, each able to finish from B's AR prefix (its probe); and, per round of the
corrector's progressive distillation (stage `distill`), its student and naive DDIM at the student's steps."""

from __future__ import annotations

from hybrid_jax import distill, model_b, xla
from hybrid_jax.config import Preset
from hybrid_jax.generators.base import Family, Generator, Network

NAME = "model_b"
STREAM = 2
DISTILLED = "model_b/distilled"  # the params the students sample with: {"ar": B's decoder, "students": {steps: ..}}


def option(cfg: Preset, depth: int) -> Generator:
    s = model_b.make_sampler(cfg.model_b, cfg.corrector, depth, geometry=cfg.geometry,
                             num_classes=cfg.data.num_classes)
    return Generator(f"B/corrector {depth}", NAME, s.sample_keys,
                     {"b_ar_step": cfg.geometry.num_patches, "corrector_unet": depth}, probe="B", finish=s.finish,
                     stream=STREAM)


def student_params(params: dict, steps: int) -> dict:
    """B's params with the `steps`-step student as its corrector, from the distilled params (`DISTILLED`)."""
    return {"ar": params["ar"], "corrector": params["students"][str(steps)]}


def few_step_options(cfg: Preset) -> tuple[Generator, ...]:
    """With distillation on: B with naive DDIM of the trained corrector on its whole grid (the students' teacher),
    then per round (most steps first) B with the round's student and B with naive DDIM on the same steps (what the
    student must beat at equal passes)."""
    grids = distill.grids(cfg.corrector.start_step, cfg.distill.halvings)
    out = []
    for i, grid in enumerate(grids if cfg.distill.halvings else ()):
        k, passes = len(grid), {"b_ar_step": cfg.geometry.num_patches, "corrector_unet": len(grid)}
        make = lambda **kw: model_b.make_sampler(cfg.model_b, cfg.corrector, geometry=cfg.geometry,
                                                 num_classes=cfg.data.num_classes, grid=grid, ddim=True, **kw)
        if i:
            s = make(v_prediction=True)
            out.append(Generator(
                f"B/corrector distilled {k}", DISTILLED,
                xla.jit(lambda p, keys, labels=None, s=s, k=k: s.sample_keys(student_params(p, k), keys, labels)),
                passes, probe="B", finish=xla.jit(lambda p, prefix, s=s, k=k: s.finish(student_params(p, k), prefix)),
                stream=STREAM))
        naive = make()
        out.append(Generator(f"B/corrector DDIM {k}", NAME, naive.sample_keys, passes, probe="B", finish=naive.finish,
                             stream=STREAM))
    return tuple(out)


def options(cfg: Preset) -> tuple[Generator, ...]:
    """B at every corrector depth of the allocation and its trained one, deepest first, then the distilled
    students and naive DDIM at their steps (`few_step_options`)."""
    depths = set(cfg.ar_corrector.depths) | {cfg.corrector.start_step}
    return tuple(option(cfg, d) for d in sorted(depths, reverse=True)) + few_step_options(cfg)


def _init(cfg: Preset, key) -> dict:
    return model_b.init_params(cfg.model_b, cfg.corrector, key, geometry=cfg.geometry,
                               num_classes=cfg.data.num_classes)


NETWORKS = (
    Network("model_b", lambda cfg: model_b.make_ar_loss(cfg.model_b, geometry=cfg.geometry,
                                                        num_classes=cfg.data.num_classes),
            lambda cfg, key: _init(cfg, key)["ar"]),
    Network("corrector", lambda cfg: model_b.make_corrector_loss(cfg.corrector, num_classes=cfg.data.num_classes),
            lambda cfg, key: _init(cfg, key)["corrector"]),
)

FAMILY = Family(NAME, "ar_corrector", STREAM, NETWORKS,
                assemble=lambda p: {"ar": p["model_b"], "corrector": p["corrector"]}, options=options, brief=lambda cfg: option(cfg, cfg.corrector.start_step))
