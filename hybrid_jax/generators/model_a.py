"""Model A: blockwise conditional DDPM over the geometry's square blocks (brief: four 16x16, 4 x 200 = 800 passes).

The U-Net sees the noisy target block (zeros elsewhere), the context canvas (earlier
blocks, zeros elsewhere), the context mask and the target mask, concatenated on channels.
Training noises only the target block and takes the epsilon-MSE on its pixels; sampling
generates the blocks in raster order, each conditioned on those before it. With `num_classes` > 1
the U-Net is class-conditional (`models.unet.add_class_embedding`): batches are (images, labels)
and the samplers take each key's class label; with one class nothing changes.
"""

from __future__ import annotations

import dataclasses
from typing import Any, Callable

import chex
import flax
import jax
import jax.numpy as jnp
import numpy as np

from hybrid_jax import data as data_lib
from hybrid_jax import diffusion, distill, xla
from hybrid_jax import geometry as geometry_lib
from hybrid_jax.config import Geometry, ModelAConfig
from hybrid_jax.models import build, class_labels
from hybrid_jax.models.unet import UNet

COND_CHANNELS = 5  # context canvas (3), context mask (1), target mask (1)


def make_unet(cfg: ModelAConfig, num_classes: int = 1) -> UNet:
    return build(UNet, cfg.unet, num_classes=num_classes)


def init_params(cfg: ModelAConfig, key: jax.Array, num_classes: int = 1, *, geometry: Geometry = Geometry()):
    x = jnp.zeros((1, *geometry.image_shape))
    cond = jnp.zeros((1, *geometry.image_shape[:2], COND_CHANNELS))
    labels = jnp.zeros((1,), jnp.int32)
    return make_unet(cfg, num_classes).init(key, x, jnp.zeros((1,), jnp.int32), cond, labels)["params"]


def block_condition(canvas: jax.Array, block: jax.Array, geometry: Geometry) -> jax.Array:
    """Conditioning channels [b, S, S, COND_CHANNELS] for generating `block` [b] given `canvas` [b, S, S, 3]."""
    chex.assert_shape(canvas, (block.shape[0], *geometry.image_shape))
    ctx = jnp.asarray(geometry_lib.context_masks(geometry))[block]  # [b, S, S, 1]
    tgt = jnp.asarray(geometry_lib.block_masks(geometry))[block]
    return jnp.concatenate([canvas * ctx, ctx, tgt], axis=-1)


def random_block_condition(images: jax.Array, labels: jax.Array, key: jax.Array, geometry: Geometry):
    """A training example's condition: a uniformly drawn target block given the real image's earlier blocks ->
    ((channels, labels), the target's pixel mask [b, S, S, 1]): A's training and its distillation both read it."""
    block = jax.random.randint(key, (images.shape[0],), 0, geometry.num_blocks)
    channels = block_condition(images, block, geometry)
    return (channels, labels), channels[..., -1:]


def make_eps_fn(cfg: ModelAConfig, train: bool = False, num_classes: int = 1):
    """eps_fn(params, x_t, t, (channels, labels)) for the diffusion core: `channels` from `block_condition`,
    class `labels` [b] (None with one class); the noisy input is masked to the target."""
    unet = make_unet(cfg, num_classes)

    def eps_fn(params, x_t, t, cond, rngs=None):
        channels, labels = cond
        return unet.apply({"params": params}, x_t * channels[..., -1:], t, channels, labels, train=train, rngs=rngs)

    return eps_fn


def make_loss(cfg: ModelAConfig, num_classes: int = 1, *,
              geometry: Geometry = Geometry()) -> Callable[[Any, Any, jax.Array], jax.Array]:
    """loss(params, batch, key) -> epsilon-MSE on a random target block; batch: images [b, S, S, 3] or
    (images, class labels [b]) (`data.images_and_labels`)."""
    sched = diffusion.linear_schedule(cfg.timesteps)
    eps_fn = make_eps_fn(cfg, train=True, num_classes=num_classes)

    def loss(params, batch, key):
        images, labels = data_lib.images_and_labels(batch)
        k_block, k_t, k_noise, k_drop = (jax.random.fold_in(key, i) for i in range(4))
        cond, target = random_block_condition(images, labels, k_block, geometry)
        t = jax.random.randint(k_t, (images.shape[0],), 0, cfg.timesteps)
        noise = jax.random.normal(k_noise, images.shape)
        x_t = diffusion.q_sample(sched, images, t, noise)
        eps = eps_fn(params, x_t, t, cond, rngs={"dropout": k_drop})
        return diffusion.eps_loss(eps, noise, target, diffusion.min_snr_weights(sched, t, cfg.min_snr_gamma))

    return loss


@dataclasses.dataclass(frozen=True)
class Sampler:
    """Jitted samplers. `sample(params, key, n[, labels])`; `sample_keys(params, keys[n][, labels[n]])` gives
    each key's image independently of the batch it is in (labels: class of each image, needed with more
    than one class). `passes` is the number of U-Net passes per image; `geometry` the layout of its images."""

    sample: Callable
    sample_keys: Callable
    passes: int
    geometry: Geometry


def _make_blocks(cfg: ModelAConfig, num_classes: int, geometry: Geometry, v_prediction: bool = False):
    """(denoise, blocks): `denoise(params, chain, canvas, block, keys, labels, x=None, trace=False)` runs `chain`
    on `block` from x (the block's own noise when None) -> (x, predicted x0 per step or None);
    `blocks(params, chain, canvas, first, keys, labels)` generates blocks first.. in raster order -> images.
    `v_prediction`: the network's output is read as v (`distill.as_eps_fn`)."""
    eps_fn = make_eps_fn(cfg, num_classes=num_classes)
    if v_prediction:
        eps_fn = distill.as_eps_fn(eps_fn, diffusion.linear_schedule(cfg.timesteps).alphas_cumprod)
    masks = jnp.asarray(geometry_lib.block_masks(geometry))  # [blocks, S, S, 1]

    def denoise(params, chain, canvas, block, keys, labels, x=None, trace=False):
        n = keys.shape[0]
        block_keys = jax.vmap(lambda k: jax.random.fold_in(k, block))(keys)
        if x is None:
            x = diffusion.per_example_normal(block_keys, cfg.timesteps, geometry.image_shape)
        cond = block_condition(canvas, jnp.full((n,), block), geometry)
        out = diffusion.sample_chain(eps_fn, params, chain, x, block_keys, cond=(cond, labels),
                                     unroll=cfg.scan_unroll, trace=trace)
        return out if trace else (out, None)

    def paste(canvas, x, block):
        return jnp.where(masks[block] > 0, x, canvas)

    def blocks(params, chain, canvas, first, keys, labels):
        def gen_block(canvas, block):
            return paste(canvas, denoise(params, chain, canvas, block, keys, labels)[0], block), None

        canvas, _ = jax.lax.scan(gen_block, canvas, jnp.arange(first, geometry.num_blocks))
        return jnp.clip(canvas, -1.0, 1.0)

    return denoise, paste, blocks


def make_sampler(cfg: ModelAConfig, budget: int | None = None, eta: float | None = None,
                 num_classes: int = 1, *, geometry: Geometry = Geometry(), first_block=None, grid=None,
                 v_prediction: bool = False) -> Sampler:
    """Model A sampling `budget` steps per block (default: steps_per_block) of the trained chain: ancestral DDPM
    respaced to those steps, or DDIM with `eta` when given. Same network, any budget.
    `first_block`: other timesteps for block 0 (ancestral DDPM; e.g. a probe's, then the budget's rest).
    `grid` (descending timesteps from the chain's last, e.g. a `distill.grids` grid) visits those steps instead of
    the budget's; `v_prediction`: the params predict v (a distilled student, `hybrid_jax.distill`)."""
    steps = cfg.timesteps
    budget = cfg.steps_per_block if budget is None else budget
    visit = diffusion.respace(steps, budget) if grid is None else np.asarray(grid)
    if visit[0] != steps - 1:
        raise ValueError(f"model A's grid starts from pure noise at timestep {steps - 1}, got {visit[0]}")
    chain = diffusion.ddpm_chain(steps, visit) if eta is None else diffusion.ddim_chain(steps, visit, eta)
    budget = len(visit)
    denoise, paste, blocks = _make_blocks(cfg, num_classes, geometry, v_prediction)

    def sample_keys(params, keys, labels=None):
        chex.assert_rank(keys, 1)
        n = keys.shape[0]
        labels = class_labels(labels, n, num_classes)
        canvas = jnp.zeros((n, *geometry.image_shape))
        if first_block is None:
            return blocks(params, chain, canvas, 0, keys, labels)
        head = diffusion.ddpm_chain(steps, first_block)
        return blocks(params, chain, paste(canvas, denoise(params, head, canvas, 0, keys, labels)[0], 0), 1, keys,
                      labels)

    def sample(params, key, num: int, labels=None):
        return sample_keys(params, jax.random.split(key, num), labels)

    first = budget if first_block is None else len(first_block)
    return Sampler(sample=xla.jit(sample, static_argnums=2), sample_keys=xla.jit(sample_keys),
                   passes=first + (geometry.num_blocks - 1) * budget, geometry=geometry)


@flax.struct.dataclass
class Probe:
    """Model A after its probe: block 0 part-way down its chain, and what the probe's steps predicted."""

    x: jax.Array  # [b, S, S, 3] block 0 at the probe's landing timestep
    x0: jax.Array  # [p, b, S, S, 3] predicted clean image after each probe step
    keys: jax.Array  # [b] per-example keys
    labels: jax.Array  # [b] class labels

    def take(self, idx) -> "Probe":
        """The examples at `idx` (each array indexed on its own batch axis)."""
        return Probe(self.x[idx], self.x0[:, idx], self.keys[idx], self.labels[idx])

    @staticmethod
    def concatenate(probes: "list[Probe]") -> "Probe":
        """One probe over the examples of `probes`, in order."""
        return Probe(*(jnp.concatenate([getattr(p, f) for p in probes], axis=int(f == "x0"))
                       for f in ("x", "x0", "keys", "labels")))


def probe_visits(probe_budget: int, probe_steps: int, budget: int, steps: int) -> np.ndarray:
    """Block 0's timesteps when A probes first: the probe's `probe_steps` steps of the `probe_budget`-step chain,
    then, from where the probe lands, the `budget`-step chain's timesteps below it."""
    head = diffusion.respace(steps, probe_budget)[: probe_steps + 1]
    rest = diffusion.respace(steps, budget)
    return np.concatenate([head, rest[rest < head[-1]]])


@dataclasses.dataclass(frozen=True)
class ProbedSampler:
    """Model A that probes first: `probe(params, keys[, labels]) -> Probe` runs block 0's first steps;
    `finish(params, Probe) -> images` continues from the probe's state with the budget's remaining steps;
    `sample_keys` is both in one call. The image is the one of an uninterrupted run over `visits` (block 0)
    and the budget's chain (later blocks). Passes per image: `probe_passes` + `finish_passes`."""

    probe: Callable
    finish: Callable
    sample_keys: Callable
    visits: np.ndarray  # [steps of block 0] timesteps block 0 visits
    probe_passes: int
    finish_passes: int

    @property
    def passes(self) -> int:
        return self.probe_passes + self.finish_passes


def make_probed_sampler(cfg: ModelAConfig, budget: int, probe_budget: int, probe_steps: int, num_classes: int = 1,
                        *, geometry: Geometry = Geometry()) -> ProbedSampler:
    """Model A at `budget` steps per block after its own probe (see `probe_visits`), resumable from the probe."""
    steps = cfg.timesteps
    visits = probe_visits(probe_budget, probe_steps, budget, steps)
    head, chain = diffusion.ddpm_chain(steps, visits), diffusion.ddpm_chain(steps, diffusion.respace(steps, budget))
    denoise, paste, blocks = _make_blocks(cfg, num_classes, geometry)
    zeros = lambda n: jnp.zeros((n, *geometry.image_shape))

    def probe(params, keys, labels=None) -> Probe:
        chex.assert_rank(keys, 1)
        labels = class_labels(labels, keys.shape[0], num_classes)
        x, x0 = denoise(params, head.steps(0, probe_steps), zeros(keys.shape[0]), 0, keys, labels, trace=True)
        return Probe(x, x0, keys, labels)

    def finish(params, p: Probe):
        chex.assert_shape(p.x, (p.keys.shape[0], *geometry.image_shape))
        canvas = zeros(p.keys.shape[0])
        x, _ = denoise(params, head.steps(probe_steps), canvas, 0, p.keys, p.labels, x=p.x)
        return blocks(params, chain, paste(canvas, x, 0), 1, p.keys, p.labels)

    return ProbedSampler(probe=xla.jit(probe), finish=xla.jit(finish),
                         sample_keys=xla.jit(
                             lambda params, keys, labels=None: finish(params, probe(params, keys, labels))),
                         visits=visits, probe_passes=probe_steps,
                         finish_passes=len(visits) - probe_steps + (geometry.num_blocks - 1) * budget)


def passes(cfg: ModelAConfig, geometry: Geometry = Geometry()) -> int:
    """U-Net passes per image at the full budget: steps_per_block for each block of the geometry (brief: 4)."""
    return geometry.num_blocks * cfg.steps_per_block
