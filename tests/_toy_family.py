"""A generator family defined outside the library, to show that a family is a value (tests/test_pipeline.py adds it
to the test preset through `Preset.families` alone): one whole-image DDPM U-Net, trained as its own stage, whose
options are DDIM at a few step budgets. Built from the library's parts (U-Net, diffusion core, training loss shape),
with no edit to library code."""

from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp

from hybrid_jax import diffusion, timing, xla
from hybrid_jax.config import Preset, TrainConfig, UNetConfig
from hybrid_jax.data import images_and_labels
from hybrid_jax.generators import Family, Generator, Network
from hybrid_jax.models import build, class_labels
from hybrid_jax.models.unet import UNet


@dataclasses.dataclass(frozen=True)
class ToyNetwork:
    """Its network's section: what training reads (`train`, `snapshots`) and the work-dir guard pins."""

    unet: UNetConfig = UNetConfig(base_channels=8, channel_mults=(1,), num_res_blocks=1, attn_resolutions=(),
                                  dropout=0.0, num_groups=4)  # one level: the cheapest U-Net to compile
    num_timesteps: int = 20
    train: TrainConfig = TrainConfig(epochs=1, batch_size=16, ckpt_every=100, log_every=2)
    snapshots: int = 0


@dataclasses.dataclass(frozen=True)
class ToyConfig:
    """The family's settings: its network's section and its options' step budgets."""

    network: ToyNetwork = ToyNetwork()
    budgets: tuple[int, ...] = (4, 2)


def family(config: ToyConfig = ToyConfig(), name: str = "toy", stream: int = 7) -> Family:
    """The family over `config`: network `name` (its training stage), options `"<name>/<k> steps"`."""

    net = config.network

    def unet(cfg: Preset) -> UNet:
        return build(UNet, net.unet, num_classes=cfg.data.num_classes)

    def eps_fn(cfg: Preset):
        net = unet(cfg)
        return lambda params, x, t, labels: net.apply({"params": params}, x, t, None, labels)

    def loss(cfg: Preset):
        sched, eps = diffusion.linear_schedule(net.num_timesteps), eps_fn(cfg)

        def fn(params, batch, key):
            images, labels = images_and_labels(batch)
            k_t, k_noise = jax.random.split(key)
            t = jax.random.randint(k_t, (images.shape[0],), 0, net.num_timesteps)
            noise = jax.random.normal(k_noise, images.shape)
            pred = eps(params, diffusion.q_sample(sched, images, t, noise), t, labels)
            return diffusion.eps_loss(pred, noise)

        return fn

    def init(cfg: Preset, key):
        x = jnp.zeros((1, *cfg.geometry.image_shape))
        return unet(cfg).init(key, x, jnp.zeros((1,), jnp.int32), None, jnp.zeros((1,), jnp.int32))["params"]

    def option(cfg: Preset, steps: int) -> Generator:
        chain = diffusion.ddim_chain(net.num_timesteps, diffusion.respace(net.num_timesteps, steps))
        eps, n = eps_fn(cfg), cfg.data.num_classes

        def sample_keys(params, keys, labels=None):
            labels = class_labels(labels, keys.shape[0], n)
            x = jax.vmap(lambda k: jax.random.normal(k, cfg.geometry.image_shape))(keys)
            return diffusion.sample_chain(eps, params, chain, x, keys, cond=labels)

        return Generator(f"{name}/{steps} steps", name, xla.jit(sample_keys), {f"{name}_unet": steps}, stream=stream)

    def options(cfg: Preset) -> tuple[Generator, ...]:
        return tuple(option(cfg, s) for s in sorted(config.budgets, reverse=True))

    def pass_flops(cfg: Preset, params) -> dict[str, float]:
        x, t = jnp.zeros((1, *cfg.geometry.image_shape)), jnp.zeros((1,), jnp.int32)
        return {f"{name}_unet": timing.flops(eps_fn(cfg), params, x, t, t)}

    return Family(name, stream, (Network(name, lambda cfg: net, loss, init),), settings=lambda cfg: config,
                  assemble=lambda p: p[name], options=options, brief=lambda cfg: options(cfg)[0],
                  pass_flops=pass_flops, config=config)
