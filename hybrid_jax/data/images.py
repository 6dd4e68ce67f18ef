"""Images as the library holds them: float32 NHWC, square, RGB, values in [-1, 1].

Loaders take an `image_size` argument (the study passes its `Geometry.image_size`); `IMAGE_SIZE`,
their default, is the brief's geometry (CIFAR-10's side).
"""

from __future__ import annotations

import dataclasses

import numpy as np

from hybrid_jax.config import Geometry

IMAGE_SIZE = Geometry().image_size  # default side of loaded images: the brief's geometry
IMAGE_SHAPE = Geometry().image_shape


class DataError(ValueError):
    """A data problem; the message says what is wrong and what to do."""


def check_images(x, name: str = "images", size: int = IMAGE_SIZE) -> None:
    """Raise DataError unless `x` is float32 [N, size, size, 3] (N >= 1) with values in [-1, 1]."""
    x = np.asarray(x)
    expected = f"{name} must be a float32 array [N, {size}, {size}, 3] with values in [-1, 1]"
    if x.ndim != 4 or x.shape[1:] != (size, size, 3) or x.shape[0] < 1:
        raise DataError(f"{expected}; got shape {x.shape}. Resize/convert the images to {size}x{size} RGB, NHWC.")
    if x.dtype != np.float32:
        raise DataError(f"{expected}; got dtype {x.dtype}. Convert with x.astype(np.float32) "
                        f"(uint8 pixels: x / 127.5 - 1).")
    if not np.all((x >= -1.0) & (x <= 1.0)):
        nans = int(np.isnan(x).sum())
        raise DataError(f"{expected}; got min {np.nanmin(x):.4g}, max {np.nanmax(x):.4g}, {nans} NaN values. "
                        f"Scale uint8 pixels as x / 127.5 - 1 and clip model outputs to [-1, 1].")


@dataclasses.dataclass(frozen=True, eq=False)
class Images:
    """Images of one class plus where they came from."""

    images: np.ndarray  # float32 [N, S, S, 3] in [-1, 1], NHWC; S = the image size asked for (32 by default)
    source: str  # human-readable origin, shown in logs and reports
    stand_in: bool  # True for the embedded default (not CIFAR-10)

    def __post_init__(self):
        x = np.asarray(self.images)
        check_images(x, "loaded images", size=x.shape[1] if x.ndim == 4 else IMAGE_SIZE)


def to_float(images_uint8: np.ndarray) -> np.ndarray:
    """uint8 [0, 255] -> float32 [-1, 1]."""
    return images_uint8.astype(np.float32) / np.float32(127.5) - np.float32(1.0)


def fit_image(image, size: int) -> np.ndarray:
    """One uint8 image [H, W] or [H, W, C] -> uint8 [size, size, 3].

    Centre-cropped to a square (the middle of the longer side), then resized (Lanczos) when its
    side is not `size`; grey images are repeated to RGB, an alpha channel is dropped.
    """
    x = np.asarray(image)
    if x.ndim == 2:
        x = x[..., None]
    if x.ndim != 3 or x.shape[-1] not in (1, 3, 4) or min(x.shape[:2]) < 1:
        raise DataError(f"expected an image [height, width, 1|3|4 channels], got shape {x.shape}; "
                        f"choose a data set of RGB or greyscale images.")
    if x.dtype != np.uint8:
        raise DataError(f"expected 8-bit images (uint8), got {x.dtype}; choose a data set of 8-bit images.")
    x = np.repeat(x, 3, axis=-1) if x.shape[-1] == 1 else x[..., :3]
    h, w, _ = x.shape
    side = min(h, w)
    top, left = (h - side) // 2, (w - side) // 2
    x = x[top:top + side, left:left + side]
    if side != size:
        from PIL import Image

        x = np.asarray(Image.fromarray(np.ascontiguousarray(x)).resize((size, size), Image.Resampling.LANCZOS))
    return x


def fit_images(images: np.ndarray, size: int) -> np.ndarray:
    """uint8 [N, H, W, C] -> uint8 [N, size, size, 3] with `fit_image`; unchanged when already that shape."""
    if images.ndim == 4 and images.shape[1:] == (size, size, 3):
        return images
    return np.stack([fit_image(x, size) for x in images]) if len(images) else np.zeros((0, size, size, 3), np.uint8)
