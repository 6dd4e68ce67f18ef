"""The 8x8 patch layout (Model B), the four quadrant blocks (Model A) and deterministic, resumable batching."""

from __future__ import annotations

from collections.abc import Iterator

import jax.numpy as jnp
import numpy as np

from hybrid_jax.data.images import IMAGE_SHAPE, IMAGE_SIZE, DataError

PATCH = 8  # Model B's tokens are 8x8 patches ...
GRID = IMAGE_SIZE // PATCH  # ... on a 4x4 grid, 16 in raster order
NUM_BLOCKS = 4  # Model A generates four 16x16 quadrants in raster order
_HALF = IMAGE_SIZE // 2


# ----------------------------------------------------------------------------- patches and blocks


def patchify(x):
    """[..., 32, 32, 3] -> [..., 16, 192]: raster-order 8x8 patches, each flattened (row, col, channel)."""
    lead = x.shape[:-3]
    if tuple(x.shape[-3:]) != IMAGE_SHAPE:
        raise DataError(f"patchify expects [..., {IMAGE_SIZE}, {IMAGE_SIZE}, 3], got {tuple(x.shape)}.")
    y = jnp.reshape(x, (*lead, GRID, PATCH, GRID, PATCH, 3))
    return jnp.reshape(jnp.swapaxes(y, -4, -3), (*lead, GRID * GRID, PATCH * PATCH * 3))


def unpatchify(p):
    """Exact inverse of `patchify`: [..., 16, 192] -> [..., 32, 32, 3]."""
    lead = p.shape[:-2]
    if tuple(p.shape[-2:]) != (GRID * GRID, PATCH * PATCH * 3):
        raise DataError(f"unpatchify expects [..., {GRID * GRID}, {PATCH * PATCH * 3}], got {tuple(p.shape)}.")
    y = jnp.reshape(p, (*lead, GRID, GRID, PATCH, PATCH, 3))
    return jnp.reshape(jnp.swapaxes(y, -4, -3), (*lead, *IMAGE_SHAPE))


def block_masks() -> np.ndarray:
    """float32 [4, 32, 32, 1]: mask b is 1 on the 16x16 quadrant b (0 TL, 1 TR, 2 BL, 3 BR)."""
    masks = np.zeros((NUM_BLOCKS, IMAGE_SIZE, IMAGE_SIZE, 1), np.float32)
    for b in range(NUM_BLOCKS):
        r, c = divmod(b, 2)
        masks[b, _HALF * r:_HALF * (r + 1), _HALF * c:_HALF * (c + 1)] = 1.0
    return masks


def context_masks() -> np.ndarray:
    """float32 [4, 32, 32, 1]: mask b is the union of blocks before b (what block b is conditioned on)."""
    blocks = block_masks()
    return np.cumsum(blocks, axis=0) - blocks


# ----------------------------------------------------------------------------- batching


def steps_per_epoch(n_images: int, batch_size: int) -> int:
    """Full batches per epoch (at least 1: a too-small set is wrapped around)."""
    if n_images < 1 or batch_size < 1:
        raise DataError(f"need at least one image and batch_size >= 1, got {n_images} images, "
                        f"batch_size {batch_size}; load more images or lower the batch size.")
    return max(1, n_images // batch_size)


def _epoch_indices(n_images: int, batch_size: int, key: int, epoch: int) -> np.ndarray:
    """int [steps_per_epoch, batch_size]: the shuffled image indices of every batch of `epoch`."""
    steps = steps_per_epoch(n_images, batch_size)
    order = np.random.default_rng([key, epoch]).permutation(n_images)
    return np.resize(order, steps * batch_size).reshape(steps, batch_size)


def batches(images: np.ndarray, batch_size: int, key: int, epoch: int) -> Iterator[np.ndarray]:
    """One epoch of shuffled full batches; the same (key, epoch) always gives the same batches."""
    for idx in _epoch_indices(len(images), batch_size, key, epoch):
        yield images[idx]


def batch_at(images: np.ndarray, batch_size: int, key: int, step: int) -> np.ndarray:
    """The batch of global step `step`, identical to an uninterrupted run over `batches`."""
    if step < 0:
        raise DataError(f"step must be >= 0, got {step}.")
    epoch, index = divmod(step, steps_per_epoch(len(images), batch_size))
    return images[_epoch_indices(len(images), batch_size, key, epoch)[index]]


def holdout_split(images: np.ndarray, holdout: int) -> tuple[np.ndarray, np.ndarray]:
    """(train, held_out): the last `holdout` images are kept out of training."""
    n_train = len(images) - holdout
    if holdout < 0 or n_train < 1:
        raise DataError(f"holdout={holdout} with {len(images)} images leaves {n_train} for training; "
                        f"lower data.holdout or load more images (data.max_images).")
    return images[:n_train], images[n_train:]
