"""Natural-image statistics: how an image was formed, not what it shows.

Each statistic is a number per image that a camera-like image keeps in a typical range and a
failure moves out of it. Groups (images in [-1, 1], g the grey image = channel mean):

- sharpness (the labeler's original eleven, `labeler.STATISTICS`): mean |gradient| of g at 1, 2
  and 4 px in x and y, |Laplacian| energy, log-ratio of gradients across Model B's patch borders to
  all gradients (`patch_seams`), pixel std, log fine-to-coarse gradient ratio, log Laplacian-to-
  gradient ratio;
- edges: log of the 99th percentile of |gradient| over the dynamic range (the sharpest edge);
- noise: log of the 10th percentile, over the 4x4 cells, of the mean |Immerkaer residual|
  (g convolved with [[1,-2,1],[-2,4,-2],[1,-2,1]]): flat parts of a clean image have none; the
  share of pixels whose residual is below 3 levels of 255 (`smooth_share`); log of the chroma
  planes' Laplacian energy over the grey plane's (`chroma_hf`: camera images carry little colour
  detail, independent noise per channel a lot);
- exposure: 1st and 99th percentile of g (black and white level), the median's position between
  them (tone), share of clipped values (|x| > 0.98);
- colour: mean R - G and B - G over the image (grey world) and over its brightest tenth (white
  point), mean chroma (std over channels);
- quantisation: share of horizontally or vertically adjacent pixel pairs whose grey levels are
  equal (to 1/4 of an 8-bit level; the score rounds every image to 8 bits first, so float outputs
  and photographs are compared alike);
- structure at the generators' grids: log-ratio of colour (chroma) gradients across the patch
  borders to all chroma gradients, and log-ratio of grey gradients across Model A's block
  borders to all grey gradients.

The grids are the configured `Geometry`'s (brief: 8x8 patches, 16x16 blocks of a 32x32 image).
"""

from __future__ import annotations

import functools

import chex
import jax
import jax.numpy as jnp
import numpy as np

from hybrid_jax.config import Geometry

SHARPNESS = ("grad_x_1", "grad_y_1", "grad_x_2", "grad_y_2", "grad_x_4", "grad_y_4", "laplacian",
             "patch_seams", "pixel_std", "fine_to_coarse", "laplacian_to_gradient")
EXTRA = ("edge_p99", "noise_floor", "smooth_share", "chroma_hf", "black_level", "white_level", "tone", "clipped",
         "cast_rg", "cast_bg", "white_rg", "white_bg", "chroma", "flat_pairs", "chroma_seams", "quadrant_seams")
STATISTICS = SHARPNESS + EXTRA
_EPS = 1e-3  # keeps the log-ratios finite on flat images
_CELL = 4  # side of the noise statistic's cells (px)


def _seams(image_size: int, tile: int) -> np.ndarray:
    """Gradient indices (of x[i + 1] - x[i]) that cross a border of the tile grid."""
    return np.arange(tile - 1, image_size - 1, tile)


def _seam_ratio(dx, dy, seams):
    across = dx[:, :, seams].mean((1, 2)) + dy[:, seams].mean((1, 2))
    return jnp.log((across + _EPS) / (dx.mean((1, 2)) + dy.mean((1, 2)) + _EPS))


def sharpness_statistics(images: jax.Array, geometry: Geometry = Geometry()) -> jax.Array:
    """[n, S, S, 3] -> [n, 11] in the order of SHARPNESS (the labeler's original statistics)."""
    g = images.mean(-1)
    out = []
    for s in (1, 2, 4):
        out += [jnp.abs(g[:, :, s:] - g[:, :, :-s]).mean((1, 2)), jnp.abs(g[:, s:] - g[:, :-s]).mean((1, 2))]
    lap = 4 * g[:, 1:-1, 1:-1] - g[:, :-2, 1:-1] - g[:, 2:, 1:-1] - g[:, 1:-1, :-2] - g[:, 1:-1, 2:]
    out.append(jnp.abs(lap).mean((1, 2)))
    dx, dy = jnp.abs(g[:, :, 1:] - g[:, :, :-1]), jnp.abs(g[:, 1:] - g[:, :-1])
    out.append(_seam_ratio(dx, dy, _seams(geometry.image_size, geometry.patch_size)))
    out.append(images.std((1, 2, 3)))
    fine, coarse = out[0] + out[1], out[2] + out[3]
    out.append(jnp.log((fine + _EPS) / (coarse + _EPS)))
    out.append(jnp.log((out[6] + _EPS) / (fine + _EPS)))
    return jnp.stack(out, 1)


def extra_statistics(images: jax.Array, geometry: Geometry = Geometry()) -> jax.Array:
    """[n, S, S, 3] -> [n, 16] in the order of EXTRA."""
    n, size = images.shape[:2]
    g = images.mean(-1)
    dx, dy = jnp.abs(g[:, :, 1:] - g[:, :, :-1]), jnp.abs(g[:, 1:] - g[:, :-1])
    flat = g.reshape(n, -1)
    lo, med, hi = (jnp.quantile(flat, q, axis=1) for q in (0.01, 0.5, 0.99))
    grads = jnp.concatenate([dx.reshape(n, -1), dy.reshape(n, -1)], 1)
    edge = jnp.log((jnp.quantile(grads, 0.99, axis=1) + _EPS) / (hi - lo + _EPS))
    k = jnp.array([[1., -2., 1.], [-2., 4., -2.], [1., -2., 1.]])
    res = sum(k[i, j] * g[:, i:i + size - 2, j:j + size - 2] for i in range(3) for j in range(3))
    res = jnp.pad(jnp.abs(res), ((0, 0), (1, 1), (1, 1)), mode="edge")
    cells = res.reshape(n, size // _CELL, _CELL, size // _CELL, _CELL).mean((2, 4)).reshape(n, -1)
    noise = jnp.log(jnp.quantile(cells, 0.1, axis=1) + _EPS)
    smooth = (res < 3.0 / 127.5).mean((1, 2))
    c = images - g[..., None]  # chroma planes
    lap_c = jnp.abs(4 * c[:, 1:-1, 1:-1] - c[:, :-2, 1:-1] - c[:, 2:, 1:-1] - c[:, 1:-1, :-2] - c[:, 1:-1, 2:]).sum(-1)
    lap_g = jnp.abs(4 * g[:, 1:-1, 1:-1] - g[:, :-2, 1:-1] - g[:, 2:, 1:-1] - g[:, 1:-1, :-2] - g[:, 1:-1, 2:])
    chroma_hf = jnp.log((lap_c.mean((1, 2)) + _EPS) / (lap_g.mean((1, 2)) + _EPS))
    tone = (med - lo) / (hi - lo + _EPS)
    clipped = (jnp.abs(images) > 0.98).mean((1, 2, 3))
    r, gr, b = images[..., 0], images[..., 1], images[..., 2]
    cast_rg, cast_bg = (r - gr).mean((1, 2)), (b - gr).mean((1, 2))
    bright = (g >= jnp.quantile(flat, 0.9, axis=1)[:, None, None]).astype(images.dtype)
    w = bright.sum((1, 2))
    white_rg, white_bg = ((r - gr) * bright).sum((1, 2)) / w, ((b - gr) * bright).sum((1, 2)) / w
    chroma = images.std(-1).mean((1, 2))
    level = 0.25 / 127.5
    flat_pairs = 0.5 * ((dx < level).mean((1, 2)) + (dy < level).mean((1, 2)))
    cdx = jnp.abs(c[:, :, 1:] - c[:, :, :-1]).sum(-1)
    cdy = jnp.abs(c[:, 1:] - c[:, :-1]).sum(-1)
    chroma_seams = _seam_ratio(cdx, cdy, _seams(size, geometry.patch_size))
    quad = _seam_ratio(dx, dy, _seams(size, geometry.block_size))
    return jnp.stack([edge, noise, smooth, chroma_hf, lo, hi, tone, clipped, cast_rg, cast_bg, white_rg, white_bg,
                      chroma,
                      flat_pairs, chroma_seams, quad], 1)


@functools.partial(jax.jit, static_argnames="geometry")
def image_statistics(images: jax.Array, geometry: Geometry = Geometry()) -> jax.Array:
    """[n, S, S, 3] -> [n, 27] statistics in the order of STATISTICS; S = geometry.image_size."""
    chex.assert_shape(images, (None, *geometry.image_shape))
    return jnp.concatenate([sharpness_statistics(images, geometry), extra_statistics(images, geometry)], 1)


def bucket(n: int, batch: int) -> int:
    """Rows a chunk of n <= batch rows is padded to: the next power of two (at least 8), at most `batch`.
    A few compiled shapes, and a dozen images never cost a full batch."""
    return min(batch, max(8, 1 << max(n - 1, 0).bit_length()))


def embed(images: np.ndarray, batch: int = 256, geometry: Geometry = Geometry()) -> np.ndarray:
    """`image_statistics` as float64 NumPy, in chunks padded to power-of-two row counts (few compiled shapes)."""
    images = np.asarray(images, np.float32)
    parts = []
    for i in range(0, len(images), batch):
        chunk = images[i:i + batch]
        padded = np.resize(chunk, (bucket(len(chunk), batch), *chunk.shape[1:]))
        parts.append(np.asarray(image_statistics(padded, geometry), np.float64)[:len(chunk)])
    return np.concatenate(parts) if parts else np.zeros((0, len(STATISTICS)))
