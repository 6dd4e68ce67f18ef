"""The image layout both generators share, as pure functions of one `Geometry` value.

`Geometry` (image side, patch side, block side; defined with the other config values in
`hybrid_jax.config`, checked there) fixes everything else: Model B's tokens are the
`num_patches` patches in raster order (one AR step each), Model A generates the `num_blocks`
square blocks in raster order, each conditioned on the blocks before it. No other module
writes an image, patch or block size.
"""

from __future__ import annotations

import chex
import jax.numpy as jnp
import numpy as np

from hybrid_jax.config import Geometry

__all__ = ["Geometry", "block_masks", "context_masks", "patchify", "unpatchify", "visible_mask"]


def patchify(x, geometry: Geometry):
    """[..., S, S, C] -> [..., num_patches, patch_dim]: raster-order patches, each flattened (row, col, channel)."""
    g = geometry
    chex.assert_shape(x, (..., *g.image_shape))
    lead, n, p = x.shape[:-3], g.patches_per_side, g.patch_size
    y = jnp.reshape(x, (*lead, n, p, n, p, g.channels))
    return jnp.reshape(jnp.swapaxes(y, -4, -3), (*lead, g.num_patches, g.patch_dim))


def unpatchify(patches, geometry: Geometry):
    """Exact inverse of `patchify`: [..., num_patches, patch_dim] -> [..., S, S, C]."""
    g = geometry
    chex.assert_shape(patches, (..., g.num_patches, g.patch_dim))
    lead, n, p = patches.shape[:-2], g.patches_per_side, g.patch_size
    y = jnp.reshape(patches, (*lead, n, n, p, p, g.channels))
    return jnp.reshape(jnp.swapaxes(y, -4, -3), (*lead, *g.image_shape))


def block_order(geometry: Geometry) -> np.ndarray:
    """The raster patch index (`patchify`'s order) of each patch in block order: blocks in raster order, raster
    within each (a stable sort by block)."""
    rows, cols = np.divmod(np.arange(geometry.num_patches), geometry.patches_per_side)
    per_block = geometry.block_size // geometry.patch_size
    return np.argsort((rows // per_block) * geometry.blocks_per_side + cols // per_block, kind="stable")


def block_masks(geometry: Geometry) -> np.ndarray:
    """float32 [num_blocks, S, S, 1]: mask b is 1 on block b (raster order: the brief's 0 TL, 1 TR, 2 BL, 3 BR)."""
    g = geometry
    rows, cols = np.indices((g.image_size, g.image_size)) // g.block_size
    index = rows * g.blocks_per_side + cols
    return (index[None] == np.arange(g.num_blocks)[:, None, None]).astype(np.float32)[..., None]


def context_masks(geometry: Geometry) -> np.ndarray:
    """float32 [num_blocks, S, S, 1]: mask b is the union of blocks before b (what block b is conditioned on)."""
    blocks = block_masks(geometry)
    return np.cumsum(blocks, axis=0) - blocks


def visible_mask(k: int, geometry: Geometry) -> np.ndarray:
    """float32 [S, S, 1]: 1 on the pixels of the first k patches (what B has drawn after k AR steps)."""
    g = geometry
    rows, cols = np.indices((g.image_size, g.image_size)) // g.patch_size
    return (rows * g.patches_per_side + cols < k).astype(np.float32)[..., None]
