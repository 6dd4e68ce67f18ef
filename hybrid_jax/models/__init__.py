"""Flax Linen modules: the DDPM U-Net and the causal patch decoder."""

import dataclasses


def build(module_cls, cfg):
    """Instantiate `module_cls` from a config dataclass whose fields are the module's attributes."""
    return module_cls(**{f.name: getattr(cfg, f.name) for f in dataclasses.fields(cfg)})
