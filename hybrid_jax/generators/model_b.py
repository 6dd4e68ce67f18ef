"""Model B: causal patch transformer (one AR step per patch of the geometry, brief: 16, KV-cached) + shallow
diffusion corrector (brief: 30 steps).

Params are `{"ar": decoder params, "corrector": U-Net params}`. The AR loop is a
`lax.scan` whose carry (`ARState`) can be returned after k steps (`ar_prefix`) and resumed
later (`finish`), so the router reads features off the first 12 steps and the seeds it keeps
continue from their cache instead of starting over. Each example's randomness comes from
its own key: `fold_in(key, 0)` drives the AR noise, `fold_in(key, 1)` the corrector. With
`num_classes` > 1 the decoder (a start token per class) and the corrector (class embedding) are
class-conditional and every sampler takes each key's class label; with one class labels are ignored.
"""

from __future__ import annotations

import dataclasses
from typing import Callable

import chex
import flax
import jax
import jax.numpy as jnp
import numpy as np

from hybrid_jax import data as data_lib
from hybrid_jax import diffusion, distill, xla
from hybrid_jax import geometry as geometry_lib
from hybrid_jax.config import CorrectorConfig, Geometry, ModelBConfig
from hybrid_jax.models import build, class_labels
from hybrid_jax.models.decoder import Decoder, KVCache, init_cache, shift_right
from hybrid_jax.models.unet import UNet


@flax.struct.dataclass
class ARState:
    """Carry of the AR scan."""

    cache: KVCache  # k, v: [layers, b, N, heads, head_dim]; N = geometry.num_patches, P = geometry.patch_dim
    patches: jax.Array  # [b, N, P] sampled patches, zeros beyond `step`
    prev: jax.Array  # [b, P] input of the next step (the last sampled patch)
    step: jax.Array  # [] int32, AR steps done


@flax.struct.dataclass
class Prefix:
    """B after k AR steps: the carry to resume from, the example keys, and what the steps sowed."""

    state: ARState
    keys: jax.Array  # [b] per-example keys
    attn: jax.Array  # [k, layers, b, heads, N] attention of each step's query
    hidden: jax.Array  # [k, layers, b, width] residual stream after each layer
    means: jax.Array  # [k, b, P] predicted patch means
    tf_means: jax.Array  # [b, k, P] predictions when re-reading the means instead of the samples
    labels: jax.Array  # [b] int32 class of each example (zeros with one class)

    def take(self, idx) -> "Prefix":
        """The examples at `idx` (each array indexed on its own batch axis)."""
        state = self.state
        return Prefix(ARState(KVCache(state.cache.k[:, idx], state.cache.v[:, idx]), state.patches[idx],
                              state.prev[idx], state.step),
                      self.keys[idx], self.attn[:, :, idx], self.hidden[:, :, idx], self.means[:, idx],
                      self.tf_means[idx], self.labels[idx])

    def batch_axes(self) -> "Prefix":
        """The batch axis of each array, as `take` indexes it (None: shared by the batch); for placing a
        prefix on a mesh (`sharding.constrain_batch`)."""
        return Prefix(ARState(KVCache(1, 1), 0, 0, None), 0, 2, 2, 1, 0, 0)


def make_decoder(cfg: ModelBConfig, num_classes: int = 1, *, geometry: Geometry = Geometry()) -> Decoder:
    """The decoder over the geometry's patches (one position per AR step)."""
    return build(Decoder, cfg.decoder, seq_len=geometry.num_patches, patch_dim=geometry.patch_dim,
                 num_classes=num_classes)


def empty_cache(decoder: Decoder, batch: int) -> KVCache:
    """A zero KV cache for `batch` sequences of `decoder`."""
    return init_cache(batch, decoder.num_layers, decoder.width, decoder.num_heads, seq_len=decoder.seq_len)


def make_corrector_unet(cfg: CorrectorConfig, num_classes: int = 1) -> UNet:
    return build(UNet, cfg.unet, num_classes=num_classes)


def corrector_fn(cfg: CorrectorConfig, num_classes: int = 1):
    """The corrector's raw output (eps when trained, v for a distilled student): (params, x_t, t [b], labels)."""
    unet = make_corrector_unet(cfg, num_classes)
    return lambda p, x, t, labels: unet.apply({"params": p}, x, t, None, labels)


def init_params(cfg: ModelBConfig, ccfg: CorrectorConfig, key: jax.Array, num_classes: int = 1, *,
                geometry: Geometry = Geometry()) -> dict:
    k_ar, k_c = jax.random.split(key)
    labels = jnp.zeros((1,), jnp.int32)
    decoder = make_decoder(cfg, num_classes, geometry=geometry)
    ar = decoder.init(k_ar, jnp.zeros((1, geometry.num_patches, geometry.patch_dim)), 0, empty_cache(decoder, 1),
                      labels)["params"]
    corr = make_corrector_unet(ccfg, num_classes).init(k_c, jnp.zeros((1, *geometry.image_shape)),
                                                       jnp.zeros((1,), jnp.int32),
                                                       None, labels)["params"]
    return {"ar": ar, "corrector": corr}


def teacher_forcing(decoder: Decoder, params, patches: jax.Array, train: bool = False, rngs=None,
                    labels=None) -> jax.Array:
    """Predicted means of every patch given the true earlier ones: [b, N, P] -> [b, N, P]."""
    means, _ = decoder.apply({"params": params}, shift_right(patches), 0, empty_cache(decoder, patches.shape[0]),
                             labels, train=train, rngs=rngs)
    return means


def make_ar_loss(cfg: ModelBConfig, num_classes: int = 1, *, geometry: Geometry = Geometry()):
    """Brief's loss: sum over the patches of ||p_hat_i - p_i||^2, averaged over the batch.
    batch: images, or (images, class labels) (`data.images_and_labels`)."""
    decoder = make_decoder(cfg, num_classes, geometry=geometry)

    def loss(params, batch, key):
        images, labels = data_lib.images_and_labels(batch)
        patches = geometry_lib.patchify(images, geometry)
        means = teacher_forcing(decoder, params, patches, train=True, rngs={"dropout": key}, labels=labels)
        return jnp.mean(jnp.sum(jnp.square(means - patches), axis=(1, 2)))

    return loss


def make_corrector_loss(ccfg: CorrectorConfig, num_classes: int = 1):
    """Standard DDPM epsilon-MSE on whole images, `num_timesteps`-step schedule, conditioned on the class
    only (batch: images, or (images, class labels))."""
    unet = make_corrector_unet(ccfg, num_classes)
    sched = diffusion.linear_schedule(ccfg.num_timesteps)

    def loss(params, batch, key):
        images, labels = data_lib.images_and_labels(batch)
        k_t, k_noise, k_drop = (jax.random.fold_in(key, i) for i in range(3))
        t = jax.random.randint(k_t, (images.shape[0],), 0, ccfg.num_timesteps)
        noise = jax.random.normal(k_noise, images.shape)
        x_t = diffusion.q_sample(sched, images, t, noise)
        eps = unet.apply({"params": params}, x_t, t, None, labels, train=True, rngs={"dropout": k_drop})
        return diffusion.eps_loss(eps, noise, weights=diffusion.min_snr_weights(sched, t, ccfg.min_snr_gamma))

    return loss


def _collect(inter: dict, num_layers: int) -> tuple[jax.Array, jax.Array]:
    """Sown per-layer attention [layers, b, heads, N] and hidden state [layers, b, width] of one step."""
    layers = [inter[f"layer_{i}"] for i in range(num_layers)]
    attn = jnp.stack([l["CachedSelfAttention_0"]["attn"][0][:, :, 0] for l in layers])
    hidden = jnp.stack([l["hidden"][0][:, 0] for l in layers])
    return attn, hidden


@dataclasses.dataclass(frozen=True)
class Sampler:
    """Jitted pieces of Model B. All take per-example keys, so a key's image does not depend on
    its batch. `passes` counts network passes per image (one AR step per patch + corrector steps);
    `geometry` is the layout of its images."""

    sample: Callable  # (params, key, n[, labels[n]]) -> images [n, S, S, 3]
    sample_keys: Callable  # (params, keys[n][, labels[n]]) -> images
    ar_prefix: Callable  # (params, keys[n], k[, labels[n]]) -> Prefix (which holds the labels)
    finish: Callable  # (params, Prefix) -> images
    correct: Callable  # (corrector params, ar images, keys[n][, labels[n]]) -> images
    passes: int
    geometry: Geometry


def make_sampler(cfg: ModelBConfig, ccfg: CorrectorConfig, depth: int | None = None,
                 num_classes: int = 1, *, geometry: Geometry = Geometry(), grid=None, ddim: bool = False,
                 v_prediction: bool = False) -> Sampler:
    """Model B whose corrector noises the AR image to step `depth` and runs `depth` denoising steps
    (default: ccfg.start_step, the brief's 30; 0 = the AR image as it is).

    `grid` (descending timesteps from depth - 1, e.g. `distill.grids`) visits only those steps, by DDIM when
    `ddim`; `v_prediction`: the corrector's params predict v (a distilled student, `hybrid_jax.distill`). Every
    variant starts from the same noised AR image, so their images of a seed differ by the steps alone."""
    depth = ccfg.start_step if depth is None else depth
    if not 0 <= depth <= ccfg.num_timesteps:
        raise ValueError(f"corrector depth must be in [0, {ccfg.num_timesteps}], got {depth}")
    grid = np.arange(depth - 1, -1, -1) if grid is None else np.asarray(grid)
    if depth and grid[0] != depth - 1:
        raise ValueError(f"a corrector grid starts at depth - 1 = {depth - 1}, got {grid[0]}")
    chain = ((diffusion.ddim_chain if ddim else diffusion.ddpm_chain)(ccfg.num_timesteps, grid) if depth
             else None)
    decoder = make_decoder(cfg, num_classes, geometry=geometry)
    d = cfg.decoder
    seq_len, patch_dim = geometry.num_patches, geometry.patch_dim
    sched = diffusion.linear_schedule(ccfg.num_timesteps)
    corr_net = corrector_fn(ccfg, num_classes)
    corr_eps = distill.as_eps_fn(corr_net, sched.alphas_cumprod) if v_prediction else corr_net

    def ar_steps(params, state: ARState, keys, num_steps: int, labels):
        ar_keys = jax.vmap(lambda k: jax.random.fold_in(k, 0))(keys)

        def step(s: ARState, _):
            means, inter = decoder.apply({"params": params}, s.prev[:, None], s.step, s.cache, labels,
                                         mutable=["intermediates"])
            means, cache = means
            noise = diffusion.per_example_normal(ar_keys, s.step, (patch_dim,))
            patch = means[:, 0] + cfg.temperature * noise
            patches = jax.lax.dynamic_update_slice(s.patches, patch[:, None], (0, s.step, 0))
            attn, hidden = _collect(inter["intermediates"], d.num_layers)
            return ARState(cache, patches, patch, s.step + 1), (attn, hidden, means[:, 0])

        return jax.lax.scan(step, state, None, length=num_steps)

    def start(params, keys, num_steps: int, labels):
        chex.assert_rank(keys, 1)
        if not 0 < num_steps <= seq_len:
            raise ValueError(f"the number of AR steps must be in [1, {seq_len}] (the geometry's patches), "
                             f"got {num_steps}")
        n = keys.shape[0]
        state = ARState(empty_cache(decoder, n), jnp.zeros((n, seq_len, patch_dim)), jnp.zeros((n, patch_dim)),
                        jnp.zeros((), jnp.int32))
        return ar_steps(params["ar"], state, keys, num_steps, labels)

    def ar_prefix(params, keys, k: int, labels=None) -> Prefix:
        labels = class_labels(labels, keys.shape[0], num_classes)
        state, (attn, hidden, means) = start(params, keys, k, labels)
        mean_seq = jnp.zeros_like(state.patches).at[:, :k].set(jnp.swapaxes(means, 0, 1))
        tf_means = teacher_forcing(decoder, params["ar"], mean_seq, labels=labels)[:, :k]
        return Prefix(state, keys, attn, hidden, means, tf_means, labels)

    def correct(cparams, ar_images, keys, labels=None):
        if depth == 0:
            return ar_images
        c_keys = jax.vmap(lambda k: jax.random.fold_in(k, 1))(keys)
        t0 = jnp.full((ar_images.shape[0],), depth - 1)
        x = diffusion.q_sample(sched, ar_images, t0, diffusion.per_example_normal(c_keys, depth, geometry.image_shape))
        x = diffusion.sample_chain(corr_eps, cparams, chain, x, c_keys,
                                   cond=class_labels(labels, keys.shape[0], num_classes), unroll=ccfg.scan_unroll)
        return jnp.clip(x, -1.0, 1.0)

    def finish(params, prefix: Prefix):
        state = prefix.state
        remaining = seq_len - prefix.attn.shape[0]
        if remaining:
            state, _ = ar_steps(params["ar"], state, prefix.keys, remaining, prefix.labels)
        return decode_and_correct(params, state, prefix.keys, prefix.labels)

    def decode_and_correct(params, state: ARState, keys, labels):
        ar_images = jnp.clip(geometry_lib.unpatchify(state.patches, geometry), -1.0, 1.0)
        return correct(params["corrector"], ar_images, keys, labels)

    def sample_keys(params, keys, labels=None):
        labels = class_labels(labels, keys.shape[0], num_classes)
        state, _ = start(params, keys, seq_len, labels)
        return decode_and_correct(params, state, keys, labels)

    def sample(params, key, num: int, labels=None):
        return sample_keys(params, jax.random.split(key, num), labels)

    return Sampler(sample=xla.jit(sample, static_argnums=2), sample_keys=xla.jit(sample_keys),
                   ar_prefix=xla.jit(ar_prefix, static_argnums=2), finish=xla.jit(finish),
                   correct=xla.jit(correct), passes=seq_len + (len(grid) if depth else 0), geometry=geometry)
