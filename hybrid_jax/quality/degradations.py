"""The validation suite's failure families: each a deterministic function of (images, strength, seed).

Every family has three strengths, weakest first, chosen to span "visible to a careful viewer side
by side" to "obvious" (fixed before the score was designed; docs/labeler.md). All work on float32
[n, S, S, 3] images in [-1, 1] and return the same, in pure NumPy (the resampler uses
`jax.image.resize`). Random choices (noise, offsets, colour casts) come from
`np.random.default_rng([seed, family index])`, so a suite run is reproducible.

| group | family | strength parameter (weak, medium, strong) |
|---|---|---|
| blur and resampling | blur | Gaussian sigma in pixels (0.6, 1.0, 1.5) |
| | resample | down to S/f px (antialiased linear) and back up, f = (1.5, 2, 3) |
| | washed out | regression to the mean: m + c (blur_s(x) - m), (c, s) = (0.8, 0.6), (0.6, 1.0), (0.4, 1.4) |
| noise | noise | Gaussian sigma in [-1, 1] units (0.04, 0.08, 0.16), i.e. 5, 10, 20 of 255 |
| quantisation and compression | quantise | levels per channel (16, 8, 4) |
| | jpeg | 8x8 DCT quantisation in YCbCr with the JPEG tables at quality (50, 25, 10) |
| global photometric | contrast | contrast around the image mean x c, c = (0.7, 0.5, 0.3) |
| | brightness | +-d (random sign per image), d = (0.15, 0.3, 0.5), clipped |
| | colour | channel gains 1 + d u (u: random unit hue direction), d = (0.1, 0.2, 0.35) |
| | tone curve | gamma g or 1/g (random per image) on [0, 1], g = (1.5, 2, 3) |
| local structure | patch shuffle | pairs of 8x8 patches swapped: (1, 3, all 16 permuted) |
| | | (the local-structure families follow the configured `Geometry`'s patches and blocks; |
| | | the brief's sizes are shown: 8x8 patches and 16x16 blocks (quadrants) of 32x32 images) |
| | patch offsets | each 8x8 patch read from a position shifted by up to (1, 2, 4) px |
| | patch seams | each 8x8 patch shifted in tone by N(0, s^2) per channel, s = (0.05, 0.1, 0.2) |
| | quadrant seams | each 16x16 quadrant shifted by up to (2, 4, 8) px and in tone by (0.05, 0.1, 0.2) |
| wrong content | wrong class | real images of other classes: the nearest class, the other classes |
| | | of the same kind (animal / vehicle), the classes of the other kind |

`wrong class` needs real images of the other classes; `validation.run_suite` takes them as an
argument and leaves the family out, saying so, where there are none (the stand-in data).
"""

from __future__ import annotations

import dataclasses
import functools
from typing import Callable

import jax
import jax.numpy as jnp
import numpy as np

from hybrid_jax import data as data_lib
from hybrid_jax import geometry as geometry_lib
from hybrid_jax.config import Geometry

LEVELS = ("weak", "medium", "strong")


@dataclasses.dataclass(frozen=True)
class Family:
    name: str
    group: str
    strengths: tuple  # parameter of each level, weakest first
    unit: str  # what the parameter means
    apply: Callable[[np.ndarray, object, np.random.Generator], np.ndarray] | None  # None: wrong class


def _f32(x) -> np.ndarray:
    return np.clip(np.asarray(x, np.float32), -1.0, 1.0)


# ----------------------------------------------------------------------------- blur and resampling

def gaussian_blur(images: np.ndarray, sigma: float) -> np.ndarray:
    """Separable Gaussian blur (radius ceil(3 sigma), reflected borders)."""
    r = max(1, int(np.ceil(3 * sigma)))
    k = np.exp(-0.5 * (np.arange(-r, r + 1) / sigma) ** 2)
    k = (k / k.sum()).astype(np.float32)
    x = np.asarray(images, np.float32)
    p = np.pad(x, ((0, 0), (r, r), (0, 0), (0, 0)), mode="reflect")
    h, w = x.shape[1:3]
    x = sum(k[i] * p[:, i:i + h] for i in range(2 * r + 1))
    p = np.pad(x, ((0, 0), (0, 0), (r, r), (0, 0)), mode="reflect")
    return _f32(sum(k[i] * p[:, :, i:i + w] for i in range(2 * r + 1)))


@functools.partial(jax.jit, static_argnums=1)
def _down_up(x: jax.Array, size: int) -> jax.Array:
    small = jax.image.resize(x, (x.shape[0], size, size, 3), "linear", antialias=True)
    return jax.image.resize(small, x.shape, "linear", antialias=True)


def resample(images: np.ndarray, factor: float) -> np.ndarray:
    """Down to round(S / factor) px (antialiased linear) and back up to S px (linear)."""
    x = np.asarray(images, np.float32)
    n = len(x)
    padded = np.resize(x, (max(8, 1 << max(n - 1, 0).bit_length()), *x.shape[1:]))  # few compiled shapes
    return _f32(np.asarray(_down_up(jnp.asarray(padded), int(round(x.shape[1] / factor))))[:n])


def washed_out(images: np.ndarray, strength) -> np.ndarray:
    """m + c (blur_s(x) - m), m the image's mean colour: how a model that regresses to the mean fails."""
    c, sigma = strength
    m = images.mean((1, 2), keepdims=True)
    return _f32(m + c * (gaussian_blur(images, sigma) - m))


# ----------------------------------------------------------------------------- noise, quantisation

def add_gaussian_noise(images: np.ndarray, sigma: float, rng: np.random.Generator) -> np.ndarray:
    return _f32(images + sigma * rng.standard_normal(images.shape, dtype=np.float32))


def quantise(images: np.ndarray, levels: int) -> np.ndarray:
    """`levels` evenly spaced values per channel (posterisation)."""
    u = (np.asarray(images, np.float32) + 1) / 2
    return _f32(np.round(u * (levels - 1)) / (levels - 1) * 2 - 1)


_Q_LUMA = np.array([[16, 11, 10, 16, 24, 40, 51, 61], [12, 12, 14, 19, 26, 58, 60, 55],
                    [14, 13, 16, 24, 40, 57, 69, 56], [14, 17, 22, 29, 51, 87, 80, 62],
                    [18, 22, 37, 56, 68, 109, 103, 77], [24, 35, 55, 64, 81, 104, 113, 92],
                    [49, 64, 78, 87, 103, 121, 120, 101], [72, 92, 95, 98, 112, 100, 103, 99]], np.float64)
_Q_CHROMA = np.full((8, 8), 99.0)
_Q_CHROMA[:4, :4] = [[17, 18, 24, 47], [18, 21, 26, 66], [24, 26, 56, 99], [47, 66, 99, 99]]


def _dct_matrix(n: int = 8) -> np.ndarray:
    """Orthonormal DCT-II: coefficients = D @ block @ D.T."""
    k, i = np.meshgrid(np.arange(n), np.arange(n), indexing="ij")
    d = np.sqrt(2.0 / n) * np.cos(np.pi * (2 * i + 1) * k / (2 * n))
    d[0] /= np.sqrt(2.0)
    return d


def jpeg_like(images: np.ndarray, quality: int) -> np.ndarray:
    """Baseline-JPEG-like: YCbCr, 8x8 DCT per channel, quantised with the IJG tables scaled to
    `quality` (no chroma subsampling, no entropy coding: it changes nothing visible)."""
    scale = 5000.0 / quality if quality < 50 else 200.0 - 2 * quality
    tables = [np.clip(np.floor((q * scale + 50) / 100), 1, 255) for q in (_Q_LUMA, _Q_CHROMA, _Q_CHROMA)]
    rgb = (np.asarray(images, np.float64) + 1) * 127.5
    m = np.array([[0.299, 0.587, 0.114], [-0.168736, -0.331264, 0.5], [0.5, -0.418688, -0.081312]])
    ycc = rgb @ m.T + np.array([0.0, 128.0, 128.0]) - 128.0
    d = _dct_matrix()
    n, size = ycc.shape[:2]
    pad = -size % 8  # JPEG pads to whole 8x8 blocks (edge) and crops back
    ycc = np.pad(ycc, ((0, 0), (0, pad), (0, pad), (0, 0)), mode="edge")
    nb = (size + pad) // 8
    blocks = ycc.reshape(n, nb, 8, nb, 8, 3).transpose(0, 1, 3, 5, 2, 4)  # [n, by, bx, c, 8, 8]
    coef = d @ blocks @ d.T
    t = np.stack(tables)[None, None, None]  # [1, 1, 1, 3, 8, 8]
    rec = d.T @ (np.round(coef / t) * t) @ d
    ycc = rec.transpose(0, 1, 4, 2, 5, 3).reshape(n, 8 * nb, 8 * nb, 3)[:, :size, :size]
    ycc = ycc + 128.0 - np.array([0.0, 128.0, 128.0])
    rgb = ycc @ np.linalg.inv(m).T
    return _f32(np.clip(np.round(rgb), 0, 255) / 127.5 - 1)


# ----------------------------------------------------------------------------- global photometric

def contrast(images: np.ndarray, c: float) -> np.ndarray:
    m = images.mean((1, 2, 3), keepdims=True)
    return _f32(m + c * (images - m))


def brightness(images: np.ndarray, d: float, rng: np.random.Generator) -> np.ndarray:
    sign = rng.choice([-1.0, 1.0], size=(len(images), 1, 1, 1)).astype(np.float32)
    return _f32(images + sign * d)


def _hue_directions(n: int, rng: np.random.Generator) -> np.ndarray:
    """[n, 3] random unit vectors orthogonal to grey (1, 1, 1)."""
    a = rng.uniform(0, 2 * np.pi, n)
    e1, e2 = np.array([1.0, -1.0, 0.0]) / np.sqrt(2), np.array([1.0, 1.0, -2.0]) / np.sqrt(6)
    return np.cos(a)[:, None] * e1 + np.sin(a)[:, None] * e2


def colour_balance(images: np.ndarray, d: float, rng: np.random.Generator) -> np.ndarray:
    """Channel gains 1 + d u on [0, 1] (a white-balance error), u a random hue direction per image."""
    gains = 1.0 + d * _hue_directions(len(images), rng)
    return _f32(((images + 1) / 2 * gains[:, None, None, :]) * 2 - 1)


def tone_curve(images: np.ndarray, g: float, rng: np.random.Generator) -> np.ndarray:
    """u ** gamma on u in [0, 1], gamma = g or 1 / g at random per image."""
    gamma = np.where(rng.random(len(images)) < 0.5, g, 1.0 / g)[:, None, None, None]
    return _f32(((np.clip(images, -1, 1) + 1) / 2) ** gamma * 2 - 1)


# ----------------------------------------------------------------------------- local structure

def swap_patches(images: np.ndarray, n_swaps: int, rng: np.random.Generator,
                 geometry: Geometry = Geometry()) -> np.ndarray:
    """Swap `n_swaps` random pairs of the geometry's patches (n_swaps >= half the patches: a full random
    permutation)."""
    p = np.asarray(geometry_lib.patchify(np.asarray(images, np.float32), geometry))
    n_p = p.shape[1]
    perms = []
    for _ in range(len(p)):
        if n_swaps >= n_p // 2:
            perm = rng.permutation(n_p)
        else:
            perm = np.arange(n_p)
            chosen = rng.permutation(n_p)[:2 * n_swaps].reshape(-1, 2)
            perm[chosen[:, 0]], perm[chosen[:, 1]] = chosen[:, 1], chosen[:, 0]
        perms.append(perm)
    return _f32(geometry_lib.unpatchify(np.take_along_axis(p, np.stack(perms)[..., None], 1), geometry))


def _tile_offsets(images: np.ndarray, tile: int, max_shift: int, tone: float, rng: np.random.Generator):
    """Each tile x tile cell read from a position shifted by a random (dy, dx) in [-s, s]^2 (not both 0
    when s > 0), plus a random tone offset N(0, tone^2) per channel: seams at the tile grid."""
    x = np.asarray(images, np.float32)
    n = len(x)
    s = max_shift
    padded = np.pad(x, ((0, 0), (s, s), (s, s), (0, 0)), mode="reflect") if s else x
    out = np.empty_like(x)
    cells = x.shape[1] // tile
    for r in range(cells):
        for c in range(cells):
            if s:
                d = rng.integers(-s, s + 1, size=(n, 2))
                zero = (d == 0).all(1)
                d[zero, 0] = rng.choice([-s, s], size=int(zero.sum()))
            else:
                d = np.zeros((n, 2), int)
            for i in range(n):
                y0, x0 = r * tile + s + d[i, 0], c * tile + s + d[i, 1]
                out[i, r * tile:(r + 1) * tile, c * tile:(c + 1) * tile] = padded[i, y0:y0 + tile, x0:x0 + tile]
            if tone:
                out[:, r * tile:(r + 1) * tile, c * tile:(c + 1) * tile] += (
                    tone * rng.standard_normal((n, 1, 1, 3))).astype(np.float32)
    return _f32(out)


def patch_offsets(images, s, rng, geometry: Geometry = Geometry()):
    return _tile_offsets(images, geometry.patch_size, s, 0.0, rng)


def patch_seams(images, tone, rng, geometry: Geometry = Geometry()):
    return _tile_offsets(images, geometry.patch_size, 0, tone, rng)


def quadrant_seams(images, strength, rng, geometry: Geometry = Geometry()):
    shift, tone = strength
    return _tile_offsets(images, geometry.block_size, shift, tone, rng)


# ----------------------------------------------------------------------------- the suite

def families(geometry: Geometry = Geometry()) -> dict[str, Family]:
    """The suite, its local-structure families on `geometry`'s patch and block grids (names and the other
    families are the same for every geometry; the brief's geometry gives `FAMILIES`)."""
    return {f.name: f for f in (*_GLOBAL_FAMILIES, *_structure_families(geometry))}


def _structure_families(geometry: Geometry) -> list[Family]:
    p, b = (f"{n}x{n}" for n in (geometry.patch_size, geometry.block_size))

    def on(fn):  # fn on this geometry's grid
        return functools.partial(fn, geometry=geometry)

    return [
        Family("patch shuffle", "local structure", (1, 3, geometry.num_patches // 2),
               f"pairs of {p} patches swapped ({geometry.num_patches // 2}: all permuted)", on(swap_patches)),
        Family("patch offsets", "local structure", (1, 2, 4), f"max shift of each {p} patch (px)", on(patch_offsets)),
        Family("patch seams", "local structure", (0.05, 0.1, 0.2), f"tone offset sd per {p} patch", on(patch_seams)),
        Family("quadrant seams", "local structure", ((2, 0.05), (4, 0.1), (8, 0.2)),
               f"(max shift px, tone sd) per {b} block", on(quadrant_seams)),
        Family("wrong class", "wrong content", ("nearest class", "same kind", "other kind"),  # validation.level_names
               "which other classes", None),
    ]


# Families that look at whole images (no grid): the same for every geometry.
_GLOBAL_FAMILIES: tuple[Family, ...] = (
    Family("blur", "blur and resampling", (0.6, 1.0, 1.5), "Gaussian sigma (px)",
           lambda x, s, rng: gaussian_blur(x, s)),
    Family("resample", "blur and resampling", (1.5, 2.0, 3.0), "down-up factor",
           lambda x, f, rng: resample(x, f)),
    Family("washed out", "blur and resampling", ((0.8, 0.6), (0.6, 1.0), (0.4, 1.4)),
           "(contrast c, blur sigma)", lambda x, s, rng: washed_out(x, s)),
    Family("noise", "noise", (0.04, 0.08, 0.16), "Gaussian sigma ([-1, 1] units)", add_gaussian_noise),
    Family("quantise", "quantisation and compression", (16, 8, 4), "levels per channel",
           lambda x, q, rng: quantise(x, q)),
    Family("jpeg", "quantisation and compression", (50, 25, 10), "JPEG quality",
           lambda x, q, rng: jpeg_like(x, q)),
    Family("contrast", "global photometric", (0.7, 0.5, 0.3), "contrast factor",
           lambda x, c, rng: contrast(x, c)),
    Family("brightness", "global photometric", (0.15, 0.3, 0.5), "shift ([-1, 1] units, +-)", brightness),
    Family("colour", "global photometric", (0.1, 0.2, 0.35), "gain deviation", colour_balance),
    Family("tone curve", "global photometric", (1.5, 2.0, 3.0), "gamma (or 1/gamma)", tone_curve),
)


FAMILIES: dict[str, Family] = families()

# The class a CIFAR-10 class is most often confused with (the "nearest class" level of `wrong class`).
NEAREST_CLASS = {"airplane": "ship", "automobile": "truck", "bird": "airplane", "cat": "dog", "deer": "horse",
                 "dog": "cat", "frog": "cat", "horse": "deer", "ship": "airplane", "truck": "automobile"}
VEHICLES = ("airplane", "automobile", "ship", "truck")


def wrong_class_levels(class_name: str) -> dict[str, tuple[str, ...]]:
    """{level: the other classes whose real images stand for it}, for `wrong class`."""
    kind = VEHICLES if class_name in VEHICLES else tuple(c for c in data_lib.CIFAR10_CLASSES if c not in VEHICLES)
    nearest = NEAREST_CLASS[class_name]
    same = tuple(c for c in kind if c not in (class_name, nearest))
    other = tuple(c for c in data_lib.CIFAR10_CLASSES if c not in kind and c not in (class_name, nearest))
    return {"nearest class": (nearest,), "same kind": same, "other kind": other}


def degrade(images: np.ndarray, family: str, level: int, seed: int = 0,
            geometry: Geometry = Geometry()) -> np.ndarray:
    """`images` under `family` at strength index `level` (0 = weak ... 2 = strong), on `geometry`'s grids."""
    fam = families(geometry)[family]
    if fam.apply is None:
        raise ValueError(f"{family!r} replaces images by other real images; see wrong_class_levels")
    rng = np.random.default_rng([seed, list(FAMILIES).index(family), level])
    return fam.apply(np.asarray(images, np.float32), fam.strengths[level], rng)


# ----------------------------------------------------------------------------- the original three

def blur(images: np.ndarray) -> np.ndarray:
    """3x3 box blur (edge padded)."""
    p = np.pad(images, ((0, 0), (1, 1), (1, 1), (0, 0)), mode="edge")
    h, w = images.shape[1:3]
    return sum(p[:, i:i + h, j:j + w] for i in range(3) for j in range(3)) / 9.0


def add_noise(images: np.ndarray, seed: int = 0, sigma: float = 0.2) -> np.ndarray:
    return np.clip(images + sigma * np.random.default_rng(seed).standard_normal(images.shape), -1, 1).astype(np.float32)


def shuffle_patches(images: np.ndarray, seed: int = 0, geometry: Geometry = Geometry()) -> np.ndarray:
    rng = np.random.default_rng(seed)
    p = np.asarray(geometry_lib.patchify(images, geometry))
    perm = np.stack([rng.permutation(p.shape[1]) for _ in range(len(p))])
    return np.asarray(geometry_lib.unpatchify(np.take_along_axis(p, perm[..., None], 1), geometry))


DEGRADATIONS = {"blur": blur, "noise": add_noise, "shuffled patches": shuffle_patches}


# ----------------------------------------------------------------------------- training-only corruptions

def saturation(images, s, rng):
    """Chroma around the grey level scaled by s or 1/s (random per image)."""
    f = np.where(rng.random(len(images)) < 0.5, s, 1.0 / s)[:, None, None, None]
    g = images.mean(-1, keepdims=True)
    return _f32(g + f * (images - g))


def hue_rotation(images, degrees, rng):
    """Chroma rotated about the grey axis by +-degrees (random sign per image)."""
    a = np.deg2rad(degrees) * rng.choice([-1.0, 1.0], len(images))
    k = np.ones(3) / np.sqrt(3)
    K = np.array([[0, -k[2], k[1]], [k[2], 0, -k[0]], [-k[1], k[0], 0]])
    R = np.eye(3)[None] + np.sin(a)[:, None, None] * K[None] + (1 - np.cos(a))[:, None, None] * (K @ K)[None]
    return _f32(np.einsum("nhwc,ndc->nhwd", images, R))


def vignetting(images, v, rng):
    yy, xx = np.meshgrid(np.linspace(-1, 1, images.shape[1]), np.linspace(-1, 1, images.shape[2]), indexing="ij")
    mask = (1 - v * (xx ** 2 + yy ** 2) / 2)[None, :, :, None]
    return _f32(((images + 1) / 2 * mask) * 2 - 1)


def sharpen(images, amount, rng):
    return _f32(images + amount * (images - gaussian_blur(images, 1.0)))


def channel_shift(images, d, rng):
    """Red and blue planes shifted by d px in opposite random directions (chromatic aberration)."""
    out = np.array(images, np.float32)
    for i in range(len(out)):
        dy, dx = rng.choice([-d, 0, d], 2) if rng.random() < 0.5 else (0, d)
        out[i, ..., 0] = np.roll(out[i, ..., 0], (dy, dx), (0, 1))
        out[i, ..., 2] = np.roll(out[i, ..., 2], (-dy, -dx), (0, 1))
    return _f32(out)


def motion_blur(images, length, rng):
    """Box blur of `length` px along x or y (random per image)."""
    x = np.asarray(images, np.float32)
    r = length // 2
    out = np.empty_like(x)
    horizontal = rng.random(len(x)) < 0.5
    for axis, sel in ((2, horizontal), (1, ~horizontal)):
        if sel.any():
            pad = [(0, 0)] * 4
            pad[axis] = (r, r)
            p = np.pad(x[sel], pad, mode="reflect")
            out[sel] = sum(np.take(p, np.arange(i, i + x.shape[axis]), axis=axis)
                           for i in range(2 * r + 1)) / (2 * r + 1)
    return _f32(out)


def salt_and_pepper(images, share, rng):
    x = np.array(images, np.float32)
    hit = rng.random(x.shape[:3]) < share
    x[hit] = rng.choice([-1.0, 1.0], int(hit.sum()))[:, None]
    return _f32(x)


# Corruptions the discriminator also trains on but the suite never validates: they widen what it
# has seen of "not a clean photograph" without giving it any validated family.
TRAINING_ONLY: dict[str, Family] = {f.name: f for f in [
    Family("saturation", "training only", (1.3, 1.7, 2.5), "chroma x s or 1/s", saturation),
    Family("hue", "training only", (15, 35, 70), "hue rotation (degrees)", hue_rotation),
    Family("vignetting", "training only", (0.3, 0.6, 0.9), "corner darkening", vignetting),
    Family("sharpen", "training only", (0.7, 1.5, 3.0), "unsharp-mask amount", sharpen),
    Family("channel shift", "training only", (1, 2, 3), "red / blue shift (px)", channel_shift),
    Family("motion blur", "training only", (3, 5, 7), "box length (px)", motion_blur),
    Family("salt and pepper", "training only", (0.005, 0.02, 0.05), "share of pixels", salt_and_pepper),
]}


def degrade_any(images: np.ndarray, family: str, level: int, seed: int = 0,
                geometry: Geometry = Geometry()) -> np.ndarray:
    """`degrade` for the suite's families and the training-only ones."""
    if family in FAMILIES:
        return degrade(images, family, level, seed, geometry)
    fam = TRAINING_ONLY[family]
    rng = np.random.default_rng([seed, 100 + list(TRAINING_ONLY).index(family), level])
    return fam.apply(np.asarray(images, np.float32), fam.strengths[level], rng)
