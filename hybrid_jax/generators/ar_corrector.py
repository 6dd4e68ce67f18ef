"""Model B's family: the causal patch transformer (`model_b`) and its shallow diffusion corrector (`corrector`),
an option per corrector depth, each able to finish from B's AR prefix (its probe)."""

from __future__ import annotations

from hybrid_jax import model_b
from hybrid_jax.config import Preset
from hybrid_jax.generators.base import Family, Generator, Network

NAME = "model_b"
STREAM = 2


def option(cfg: Preset, depth: int) -> Generator:
    s = model_b.make_sampler(cfg.model_b, cfg.corrector, depth, geometry=cfg.geometry,
                             num_classes=cfg.data.num_classes)
    return Generator(f"B/corrector {depth}", NAME, s.sample_keys,
                     {"b_ar_step": cfg.geometry.num_patches, "corrector_unet": depth}, probe="B", finish=s.finish,
                     stream=STREAM)


def options(cfg: Preset) -> tuple[Generator, ...]:
    """B at every corrector depth of the allocation and its trained one, deepest first."""
    depths = set(cfg.ar_corrector.depths) | {cfg.corrector.start_step}
    return tuple(option(cfg, d) for d in sorted(depths, reverse=True))


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
